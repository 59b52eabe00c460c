//! `/files`: upload, download, list and delete in a session's `/sandbox`, the `files` a run wrote, the limits,
//! and every way out of `/sandbox` refused with a 4xx.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::util::{both_launchers, shared, user, Api, TestServer, TOKEN};

async fn put(api: &Api, who: &str, path: &str, bytes: &[u8]) -> (u16, Value) {
    let (status, body) = api.send(Method::PUT, &format!("/files/{who}/{path}"), bytes.to_vec()).await;
    (status, as_json(&body))
}

async fn get(api: &Api, who: &str, path: &str) -> (u16, Vec<u8>) {
    api.send(Method::GET, &format!("/files/{who}/{path}"), Vec::new()).await
}

async fn list(api: &Api, who: &str, query: &str) -> (u16, Value) {
    let (status, body) = api.send(Method::GET, &format!("/files/{who}{query}"), Vec::new()).await;
    (status, as_json(&body))
}

async fn delete(api: &Api, who: &str, path: &str) -> (u16, Value) {
    let (status, body) = api.send(Method::DELETE, &format!("/files/{who}/{path}"), Vec::new()).await;
    (status, as_json(&body))
}

fn as_json(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

/// The detail of a refusal, which must say something.
fn detail(body: &[u8]) -> String {
    let detail = as_json(body)["detail"].as_str().unwrap_or_default().to_owned();
    assert!(!detail.is_empty(), "a refusal without a detail: {}", String::from_utf8_lossy(body));
    detail
}

/// A request sent as raw bytes, so the target reaches the server exactly as written (clients normalize `..`).
async fn raw_request(server: &TestServer, method: &str, target: &str) -> (u16, String) {
    let address = server.url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!(
        "{method} {target} HTTP/1.1\r\nHost: {address}\r\nX-Auth-Token: {TOKEN}\r\nContent-Length: 1\r\n\
         Connection: close\r\n\r\nx"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_string(&mut answer)).await.unwrap().unwrap();
    let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    (status, body)
}

/// An upload to a new user starts its session; the code reads the file, which belongs to the sandbox's user (so
/// it can change it), and so do the parent directories the upload created. Both launchers.
#[tokio::test]
async fn upload_then_code_reads_it() {
    for (launcher, server) in both_launchers() {
        let api = server.client();
        let who = user("files-upload");
        let (status, answer) = put(&api, &who, "data/in/hello.txt", "héllo\n".as_bytes()).await;
        assert_eq!((status, answer.clone()), (200, json!({"path": "data/in/hello.txt", "size": 7})), "{launcher}");
        let code = "import os\np = 'data/in/hello.txt'\nprint(open(p).read(), end='')\n\
                    print([os.stat(x).st_uid == os.getuid() for x in (p, 'data', 'data/in')])\n\
                    print(oct(os.stat(p).st_mode & 0o777))\n_ = open(p, 'a').write('more\\n')";
        let text = api.run_ok(&who, code).await;
        assert_eq!(text, "héllo\n[True, True, True]\n0o644\n", "{launcher}");
        let (status, bytes) = get(&api, &who, "data/in/hello.txt").await;
        assert_eq!((status, bytes), (200, "héllo\nmore\n".as_bytes().to_vec()), "{launcher}");
        // Replacing a file the code wrote.
        let (status, _) = put(&api, &who, "data/in/hello.txt", b"new").await;
        assert_eq!(status, 200);
        assert_eq!(api.run_ok(&who, "print(open('data/in/hello.txt').read())").await, "new\n", "{launcher}");
        api.release(&who).await;
    }
}

/// What the code writes downloads byte for byte (binary, 3 MiB), with its length.
#[tokio::test]
async fn code_writes_then_download() {
    let api = shared().client();
    let who = user("files-download");
    api.run_ok(&who, "open('blob.bin', 'wb').write(bytes(range(256)) * 12288)").await;
    let started = Instant::now();
    let (status, bytes) = get(&api, &who, "blob.bin").await;
    assert_eq!(status, 200);
    let expected: Vec<u8> = (0..=255u8).cycle().take(256 * 12288).collect();
    assert!(bytes == expected, "downloaded {} bytes, not the file's {}", bytes.len(), expected.len());
    assert!(started.elapsed() < Duration::from_secs(20));
    let (status, body) = get(&api, &who, "absent.txt").await;
    assert_eq!(status, 404);
    assert!(detail(&body).contains("absent.txt"));
    let (status, body) = get(&api, &user("files-nobody"), "x.txt").await;
    assert_eq!(status, 404, "a user without a session has no files");
    assert!(detail(&body).contains("no session"));
    api.release(&who).await;
}

/// A listing shows every entry below a directory with its kind, size and time; `?path=` lists a subdirectory.
#[tokio::test]
async fn listing_shows_entries() {
    let api = shared().client();
    let who = user("files-list");
    let (status, body) = list(&api, &who, "").await;
    assert_eq!(status, 404, "no session yet: {body}");
    api.run_ok(&who, "import os\nos.makedirs('sub/deep')\nopen('sub/deep/a.txt', 'w').write('abc')\nopen('top.txt', 'w').write('12345')\nos.symlink('/etc/passwd', 'link')").await;
    let (status, listing) = list(&api, &who, "").await;
    assert_eq!(status, 200, "{listing}");
    let entries = listing["entries"].as_array().unwrap();
    let find = |path: &str| entries.iter().find(|e| e["path"] == path).cloned().unwrap_or(Value::Null);
    assert_eq!((find("top.txt")["kind"].clone(), find("top.txt")["size"].clone()), (json!("file"), json!(5)));
    assert_eq!(find("sub")["kind"], "directory");
    assert_eq!(find("sub/deep/a.txt")["size"], 3);
    assert_eq!(find("link")["kind"], "symlink", "links are listed, not followed: {listing}");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!((find("top.txt")["modified"].as_f64().unwrap() - now).abs() < 300.0, "{listing}");
    assert_eq!(listing["truncated"], false);
    let (status, sub) = list(&api, &who, "?path=sub").await;
    assert_eq!(status, 200, "{sub}");
    let paths: Vec<_> = sub["entries"].as_array().unwrap().iter().map(|e| e["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["sub/deep", "sub/deep/a.txt"]);
    for (query, expected) in [("?path=top.txt", 400), ("?path=nothing", 404), ("?path=../", 400), ("?path=link", 400)] {
        let (status, body) = list(&api, &who, query).await;
        assert_eq!(status, expected, "{query}: {body}");
        assert!(body["detail"].is_string(), "{body}");
    }
    api.release(&who).await;
}

/// Delete removes files, links (not their targets) and empty directories; a non-empty directory is 409.
#[tokio::test]
async fn delete_removes_files() {
    let api = shared().client();
    let who = user("files-delete");
    api.run_ok(
        &who,
        "import os\nos.makedirs('d/e')\nopen('d/f.txt', 'w').write('x')\nos.symlink('/etc/hostname', 'l')",
    )
    .await;
    assert_eq!(delete(&api, &who, "d/f.txt").await, (200, json!({"status": "ok", "path": "d/f.txt", "kind": "file"})));
    assert_eq!(delete(&api, &who, "l").await.1["kind"], "symlink");
    let (status, body) = delete(&api, &who, "d").await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(delete(&api, &who, "d/e").await.1["kind"], "directory");
    assert_eq!(delete(&api, &who, "d/f.txt").await.0, 404);
    let left = api
        .run_ok(&who, "import os\nprint(os.listdir('d'), os.path.lexists('l'), os.path.exists('/etc/passwd'))")
        .await;
    assert_eq!(left, "[] False True\n");
    api.release(&who).await;
}

/// A run's answer lists the files it wrote (created or modified), and an empty list when it wrote none; the
/// streamed result says the same.
#[tokio::test]
async fn run_answer_lists_written_files() {
    let api = shared().client();
    let who = user("files-written");
    api.run_ok(&who, "open('old.txt', 'w').write('old')").await;
    let (status, body) = api
        .execute(&who, "import os\nos.makedirs('out', exist_ok=True)\nopen('out/b.csv', 'w').write('1,2\\n')\nopen('a.txt', 'w').write('hello')")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["files"], json!([{"path": "a.txt", "size": 5}, {"path": "out/b.csv", "size": 4}]));
    let (status, body) = api.execute(&who, "x = 1").await;
    assert_eq!((status, body["files"].clone()), (200, json!([])), "a run that writes nothing lists nothing");
    let (_, events) = api.execute_stream(&who, "open('old.txt', 'a').write('!')").await;
    let result = &events.last().unwrap().2;
    assert_eq!(result["files"], json!([{"path": "old.txt", "size": 4}]), "{result}");
    api.release(&who).await;
}

/// With many files in `/sandbox` (the walks then leave the async worker for the blocking pool) the answer is the
/// same: exactly what the run wrote.
#[tokio::test]
async fn written_files_among_many() {
    let api = shared().client();
    let who = user("files-many");
    let (status, body) = api.execute(&who, "for i in range(300):\n    open(f'f{i:03}', 'w').write('x')").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["files"].as_array().map(Vec::len), Some(300), "the first run wrote 300 files");
    for round in 0..2 {
        let (status, body) =
            api.execute(&who, &format!("open('f007', 'w').write('{round}' * 9)\nopen('new{round}', 'w')")).await;
        assert_eq!(status, 200, "{body}");
        let expected = json!([{"path": "f007", "size": 9}, {"path": format!("new{round}"), "size": 0}]);
        assert_eq!(body["files"], expected, "round {round}");
    }
    api.release(&who).await;
}

/// Files can be read, listed and written while the session's code runs: they never wait for the kernel.
#[tokio::test]
async fn file_operations_do_not_wait_for_running_code() {
    let api = shared().client();
    let who = user("files-busy");
    api.run_ok(&who, "open('ready.txt', 'w').write('ok')").await;
    let running = {
        let api = api.clone();
        let who = who.clone();
        tokio::spawn(async move { api.execute(&who, "import time\ntime.sleep(4)").await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    assert_eq!(get(&api, &who, "ready.txt").await, (200, b"ok".to_vec()));
    assert_eq!(put(&api, &who, "during.txt", b"x").await.0, 200);
    assert_eq!(list(&api, &who, "").await.0, 200);
    assert!(started.elapsed() < Duration::from_secs(2), "file operations waited: {:?}", started.elapsed());
    assert!(!running.is_finished(), "the code should still be running");
    assert_eq!(running.await.unwrap().0, 200);
    api.release(&who).await;
}

/// Uploads past `file_limit_mib` are 413 and leave nothing; a full `/sandbox` is 413 saying so, and the space
/// comes back once a file is deleted.
#[tokio::test]
async fn limits_are_413() {
    let server = TestServer::start(&[
        "--launcher",
        "exec",
        "--warm-sandboxes",
        "1",
        "--file-limit-mib",
        "1",
        "--sandbox-size-mib",
        "2",
    ]);
    server.client_blocking_wait_ready();
    let api = server.client();
    let who = user("files-limits");
    let (status, body) = put(&api, &who, "big.bin", &vec![7u8; (1 << 20) + 1]).await;
    assert_eq!(status, 413, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("file_limit_mib"), "{body}");
    assert_eq!(put(&api, &who, "ok.bin", &vec![7u8; 1 << 20]).await.0, 200);
    api.run_ok(&who, "open('fill.bin', 'wb').write(b'x' * (900 << 10))").await;
    let (status, body) = put(&api, &who, "more.bin", &vec![7u8; 1 << 20]).await;
    assert_eq!(status, 413, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("sandbox_size_mib"), "{body}");
    let listing = list(&api, &who, "").await.1;
    let paths: Vec<_> = listing["entries"].as_array().unwrap().iter().map(|e| e["path"].clone()).collect();
    assert!(!paths.contains(&json!("more.bin")) && !paths.contains(&json!("big.bin")), "{listing}");
    let leftovers = api.run_ok(&who, "import os\nprint([n for n in os.listdir('.') if n.startswith('.upload')])").await;
    assert_eq!(leftovers, "[]\n", "a refused upload leaves no temporary file");
    assert_eq!(delete(&api, &who, "fill.bin").await.0, 200);
    assert_eq!(delete(&api, &who, "ok.bin").await.0, 200);
    assert_eq!(put(&api, &who, "more.bin", &vec![7u8; 1 << 20]).await.0, 200, "the space came back");
}

/// Every way out of `/sandbox` is refused with a 4xx and a detail: `..` (plain and URL-encoded), absolute
/// paths, symlinks the code planted (to a file, to a directory, even inside), a fifo (without hanging), and
/// another user's files. Both launchers.
#[tokio::test]
async fn escapes_are_refused() {
    let host_passwd = std::fs::read("/etc/passwd").unwrap();
    for (launcher, server) in both_launchers() {
        let api = server.client();
        let (who, other) = (user("files-escape"), user("files-victim"));
        assert_eq!(put(&api, &other, "secret.txt", b"victim's").await.0, 200);
        let plant = "import os\nopen('real.txt', 'w').write('r')\nos.symlink('/etc/passwd', 'passwd')\n\
                     os.symlink('/etc', 'etc')\nos.symlink('real.txt', 'inner')\nos.mkfifo('pipe')\nos.mkdir('d')";
        api.run_ok(&who, plant).await;
        for target in [
            format!("/files/{who}/../{other}/secret.txt"),
            format!("/files/{who}/d/../../etc/passwd"),
            format!("/files/{who}/..%2F..%2Fetc%2Fpasswd"),
            format!("/files/{who}/%2e%2e/%2e%2e/etc/passwd"),
            format!("/files/{who}//etc/passwd"),
            format!("/files/{who}/%2Fetc%2Fpasswd"),
            format!("/files/{who}/a%00b"),
        ] {
            for method in ["GET", "PUT", "DELETE"] {
                let (status, body) = raw_request(server, method, &target).await;
                assert!((400..500).contains(&status), "{launcher}: {method} {target} gave {status} {body}");
                assert!(body.contains("detail"), "{launcher}: {method} {target}: {body}");
            }
        }
        let started = Instant::now();
        for path in ["passwd", "etc/passwd", "etc/hostname", "inner", "pipe", "d"] {
            let (status, body) = get(&api, &who, path).await;
            assert_eq!(status, 400, "{launcher}: GET {path}: {}", String::from_utf8_lossy(&body));
            let detail = detail(&body);
            assert!(!detail.contains("root:x:0"), "{launcher}: {detail}");
        }
        for path in ["passwd", "etc/passwd", "etc/new-file", "inner", "pipe", "d"] {
            let (status, body) = put(&api, &who, path, b"owned\n").await;
            assert_eq!(status, 400, "{launcher}: PUT {path}: {body}");
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{launcher}: a fifo made a request wait");
        let (status, body) = list(&api, &who, "?path=etc").await;
        assert_eq!(status, 400, "{launcher}: listing through a link: {body}");
        assert_eq!(std::fs::read("/etc/passwd").unwrap(), host_passwd, "{launcher}: the host's /etc/passwd changed");
        assert!(!std::path::Path::new("/etc/new-file").exists(), "{launcher}: an upload wrote through a link");
        let inside =
            api.run_ok(&who, "print(open('real.txt').read(), os.readlink('passwd'), os.path.islink('inner'))").await;
        assert_eq!(inside, "r /etc/passwd True\n", "{launcher}: refused uploads changed nothing");
        assert_eq!(get(&api, &who, "secret.txt").await.0, 404, "{launcher}: another user's file");
        assert_eq!(get(&api, &other, "secret.txt").await, (200, b"victim's".to_vec()), "{launcher}");
        api.release(&who).await;
        api.release(&other).await;
    }
}

/// File operations are work in a session: a session used only through `/files` for longer than the idle timeout
/// is kept (with its state); once they stop, it is recycled as idle.
#[tokio::test]
async fn file_operations_keep_the_session_alive() {
    let server = TestServer::start(&["--warm-sandboxes", "0", "--idle-timeout-secs", "2", "--reap-interval-secs", "1"]);
    let api = server.client();
    let who = user("files-idle");
    api.run_ok(&who, "kept = 'yes'").await;
    let busy_until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < busy_until {
        assert_eq!(list(&api, &who, "").await.0, 200, "the session was recycled while its files were in use");
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert_eq!(api.run_ok(&who, "kept").await, "'yes'");
    // Watched through /status, which is no work in the session.
    let deadline = Instant::now() + Duration::from_secs(20);
    while api.status().await["busy_workers"] != 0 {
        assert!(Instant::now() < deadline, "the idle session was never recycled");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(list(&api, &who, "").await.0, 404, "a recycled session has no files");
}

/// An upload's pages (`/sandbox` is a tmpfs) are charged to the sandbox's memory cgroup, as files its code writes
/// are, so the sandbox's memory limit covers them and the gateway's memory does not grow with uploads.
#[tokio::test]
async fn uploads_count_against_the_sandboxs_memory() {
    let server = TestServer::start(&["--warm-sandboxes", "0"]);
    let api = server.client();
    let who = user("files-charged");
    api.run_ok(&who, "1").await;
    let sandboxes: Vec<_> = std::fs::read_dir(server.data_dir.join("sessions")).unwrap().flatten().collect();
    assert_eq!(sandboxes.len(), 1, "one sandbox: the user's");
    let name = sandboxes[0].file_name().into_string().unwrap();
    let parent = gateway::launcher::cgroup_parent_for(&server.data_dir);
    let usage_file = ["memory/{p}/{n}/memory.usage_in_bytes", "{p}/{n}/memory.current"]
        .map(|f| std::path::PathBuf::from("/sys/fs/cgroup").join(f.replace("{p}", &parent).replace("{n}", &name)))
        .into_iter()
        .find(|f| f.exists())
        .expect("the sandbox's memory cgroup");
    let usage = || std::fs::read_to_string(&usage_file).unwrap().trim().parse::<u64>().unwrap();
    let before = usage();
    let size = 48 << 20;
    assert_eq!(put(&api, &who, "big.bin", &vec![1u8; size]).await.0, 200);
    let grown = usage().saturating_sub(before);
    assert!(grown >= (size as u64) * 9 / 10, "the sandbox's memory grew by {grown} bytes for a {size}-byte upload");
    assert_eq!(api.run_ok(&who, "import os; os.path.getsize('big.bin')").await, size.to_string());
}

/// An upload that does not fit in the session's memory (its files count against the memory limit) is refused with
/// a 413 that says so, not a 500.
#[tokio::test]
async fn an_upload_past_the_memory_limit_is_413() {
    let flags =
        ["--warm-sandboxes", "0", "--memory-limit-mib", "384", "--sandbox-size-mib", "512", "--file-limit-mib", "500"];
    let server = TestServer::start(&flags);
    let api = server.client();
    let who = user("files-oom");
    api.run_ok(&who, "1").await;
    let (status, body) = put(&api, &who, "huge.bin", &vec![3u8; 450 << 20]).await;
    assert_eq!(status, 413, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("memory"), "{body}");
}
