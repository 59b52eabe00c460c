//! The web console: its page and assets as served (no browser), and the page driven end to end in a headless
//! chromium against a real server: token, runs, streamed outputs, images, HTML, tracebacks, Stop, Release, and
//! the page opened from disk.

use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use serde_json::json;

use crate::browser::{artifact_dir, shift_enter, Browser};
use crate::util::{shared, TestServer, TOKEN};

/// `GET /` is public HTML naming its assets; each asset is served, public, with its content type and an ETag
/// that answers 304; an unknown asset is a JSON 404.
#[tokio::test]
async fn page_and_assets_are_served_without_a_token() {
    let http = reqwest::Client::new();
    let url = &shared().url;
    let page = http.get(format!("{url}/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let html = page.text().await.unwrap();
    assert!(html.contains("<title>Code Interpreter</title>"), "{html}");
    let assets: Vec<&str> = html
        .split(['"', '\''])
        .filter(|part| part.starts_with("console/") && (part.ends_with(".js") || part.ends_with(".css")))
        .collect();
    assert!(assets.len() >= 6, "{assets:?}");
    for asset in assets {
        let response = http.get(format!("{url}/{asset}")).send().await.unwrap();
        assert_eq!(response.status(), 200, "{asset}");
        let expected = if asset.ends_with(".js") { "text/javascript" } else { "text/css" };
        let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(content_type.starts_with(expected), "{asset}: {content_type}");
        let etag = response.headers()["etag"].clone();
        assert!(response.text().await.unwrap().len() > 100, "{asset} is empty");
        let again = http.get(format!("{url}/{asset}")).header("if-none-match", etag).send().await.unwrap();
        assert_eq!(again.status(), 304, "{asset}");
    }
    let licence = http.get(format!("{url}/console/vendor/codemirror/LICENSE")).send().await.unwrap();
    assert_eq!(licence.status(), 200);
    let missing = http.get(format!("{url}/console/nope.js")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    let body: serde_json::Value = missing.json().await.unwrap();
    assert!(body["detail"].as_str().unwrap().contains("nope.js"), "{body}");
}

/// The README's sine-wave plot.
const SINE: &str = "import numpy as np, matplotlib.pyplot as plt\nx = np.linspace(0, 2*np.pi, 200)\n\
                    plt.plot(x, np.sin(x))\nplt.title(\"正弦波\")\nprint(\"plotted\")\nplt.show()";

/// HTML from the kernel (a DataFrame and a script) and text that looks like HTML on stderr.
const HTML_CELL: &str = "import pandas as pd, sys\nfrom IPython.display import HTML, display\n\
                         print('<b>not bold</b>', file=sys.stderr)\n\
                         display(HTML('<p>Rendered <i>HTML</i>, no scripts</p><script>document.title = \"ran\"</script>'))\n\
                         pd.DataFrame({'x': [1, 2, 3], 'x squared': [1, 4, 9]})";

/// The window height at which the whole log shows without scrolling.
const FULL_HEIGHT: &str =
    "const main = document.querySelector('main'); return main.scrollHeight - main.clientHeight + window.outerHeight";

/// The last cell's element, for the scripts below.
const LAST: &str = "const cell = [...document.querySelectorAll('.cell')].pop();";

/// The console in a real browser against a real server: a wrong token shows, print(1+1) shows 2, the plot
/// shows as a PNG, HTML is sandboxed and stderr set apart, a traceback keeps its colours, Stop interrupts,
/// Release changes the pool status; then the page opened from disk runs code against the server's address.
#[tokio::test]
async fn console_in_a_browser() {
    let server = TestServer::start(&["--warm-sandboxes", "1", "--execution-timeout-secs", "60"]);
    server.client().wait_ready().await;
    let Some(browser) = Browser::start().await else { return };
    let outcome = AssertUnwindSafe(drive(&browser, &server)).catch_unwind().await;
    browser.close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn drive(browser: &Browser, server: &TestServer) {
    browser.goto(&format!("{}/", server.url)).await;
    let server_field = browser.eval("return document.getElementById('server').value", vec![]).await;
    assert_eq!(server_field, json!(server.url), "served over http, the page talks to its own origin");
    browser
        .wait_for(
            "the refused token to show",
            30,
            "return document.getElementById('pool-text').textContent === 'Token refused' \
             && !document.getElementById('notice').hidden \
             && document.getElementById('notice').textContent.includes('401')",
        )
        .await;
    browser.type_into("#token", TOKEN).await;

    run_typed(browser, "print(1+1)").await;
    let text = finished(browser, "print(1+1)").await;
    assert_eq!(text, json!(["ok", "2\n"]));

    run_set(browser, SINE).await;
    let image = browser
        .wait_for(
            "the sine plot as a PNG",
            60,
            &format!(
                "{LAST} const img = cell.querySelector('.out-image img'); \
                 return img && img.complete && img.src.startsWith('data:image/png;base64,') && img.naturalWidth > 100 \
                 && cell.dataset.state === 'ok' && cell.querySelector('.out.stdout').textContent"
            ),
        )
        .await;
    assert_eq!(image, json!("plotted\n"));

    run_set(browser, HTML_CELL).await;
    let html = browser
        .wait_for(
            "the DataFrame in a sandboxed frame",
            60,
            &format!(
                "{LAST} const frames = [...cell.querySelectorAll('.out-html iframe')]; \
                 return cell.dataset.state === 'ok' && frames.length === 2 && [ \
                   frames.map(f => f.getAttribute('sandbox')), frames[1].srcdoc.includes('x squared'), \
                   cell.querySelector('.out.stderr').textContent, cell.querySelectorAll('.outputs b').length, \
                   document.title]"
            ),
        )
        .await;
    assert_eq!(html, json!([["", ""], true, "<b>not bold</b>\n", 0, "Code Interpreter"]));

    run_typed(browser, "1/0").await;
    let error = browser
        .wait_for(
            "the traceback with colours",
            60,
            &format!(
                "{LAST} const tb = cell.querySelector('.out.error'); \
                 return cell.dataset.state === 'failed' && tb && [tb.textContent.includes('ZeroDivisionError'), \
                   tb.querySelectorAll('span[style*=\"color\"]').length > 0, cell.querySelector('.reason').textContent]"
            ),
        )
        .await;
    assert_eq!(error, json!([true, true, "error"]));

    stop_a_sleep(browser).await;
    // Tall enough to show every cell in the screenshot (the README's picture).
    let height = browser.eval(FULL_HEIGHT, vec![]).await.as_u64().expect("a height");
    browser.client.set_window_size(1280, height.min(3000) as u32).await.expect("resizing the window");
    browser.eval("document.querySelector('main').scrollTop = 0", vec![]).await;
    let png = browser.save_screenshot(&artifact_dir().join("console.png")).await;
    browser.client.set_window_size(1280, 1000).await.expect("resizing the window");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 20_000, "a screenshot of {} bytes", png.len());
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    assert!(width >= 1000, "screenshot width {width}");

    release_and_renew(browser).await;
    from_disk(browser, server).await;
}

/// Types code into the editor and runs it with Shift+Enter.
async fn run_typed(browser: &Browser, code: &str) {
    browser.type_into(".editor .CodeMirror", &format!("{code}{}", shift_enter())).await;
}

/// Puts code into the editor as a whole (typing would auto-indent) and runs it with Shift+Enter.
async fn run_set(browser: &Browser, code: &str) {
    browser.eval("document.querySelector('.CodeMirror').CodeMirror.setValue(arguments[0])", vec![json!(code)]).await;
    browser.type_into(".editor .CodeMirror", &shift_enter()).await;
}

/// Waits until the last cell ran `code` and finished; returns its state and stdout.
async fn finished(browser: &Browser, code: &str) -> serde_json::Value {
    let script = format!(
        "{LAST} return cell && cell.querySelector('.cell-code').textContent === {code:?} \
         && cell.dataset.state !== 'running' && [cell.dataset.state, cell.querySelector('.out.stdout')?.textContent]"
    );
    browser.wait_for(&format!("{code} to finish"), 60, &script).await
}

/// Stop interrupts a running cell: it ends with KeyboardInterrupt long before its sleep would.
async fn stop_a_sleep(browser: &Browser) {
    run_set(browser, "import time\nprint('sleeping', flush=True)\ntime.sleep(30)").await;
    let started = std::time::Instant::now();
    let stop_script = format!(
        "{LAST} return cell.querySelector('.out.stdout')?.textContent === 'sleeping\\n' \
         && !document.getElementById('stop').disabled"
    );
    browser.wait_for("the sleep to start", 60, &stop_script).await;
    browser.click("#stop").await;
    let stopped = browser
        .wait_for(
            "the interrupted cell",
            20,
            &format!(
                "{LAST} return cell.dataset.state === 'failed' \
                 && cell.querySelector('.out.error').textContent.includes('KeyboardInterrupt') \
                 && document.getElementById('stop').disabled"
            ),
        )
        .await;
    assert_eq!(stopped, json!(true));
    assert!(started.elapsed().as_secs() < 25, "Stop took {:?}", started.elapsed());
}

/// Release frees the session's sandbox (the pool status shows it); New Session makes a new user id.
async fn release_and_renew(browser: &Browser) {
    let pool = "return document.getElementById('pool').dataset.busy";
    browser.wait_for("the pool to show the session in use", 30, &format!("{pool} === '1'")).await;
    browser.click("#release").await;
    browser.wait_for("the pool to show no session in use", 30, &format!("{pool} === '0'")).await;
    let note = browser.eval("return document.querySelector('.note').textContent", vec![]).await;
    assert!(note.as_str().unwrap().contains("released"), "{note}");
    let before = browser.eval("return document.getElementById('session').textContent", vec![]).await;
    browser.click("#new-session").await;
    let after = browser.eval("return document.getElementById('session').textContent", vec![]).await;
    assert_ne!(before, after);
    assert_eq!(after.as_str().unwrap().len(), 36, "a UUID: {after}");
}

/// The page opened from disk defaults to the standard address; with nothing listening at the address it says
/// so; with the server's address typed in, it runs code there.
async fn from_disk(browser: &Browser, server: &TestServer) {
    let page = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web/index.html");
    browser.goto(&format!("file://{}", page.display())).await;
    let default = browser.eval("return document.getElementById('server').value", vec![]).await;
    assert_eq!(default, json!("http://127.0.0.1:3874"));
    browser.type_into("#token", TOKEN).await;
    let nobody = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    set_server(browser, &format!("http://{nobody}")).await;
    run_typed(browser, "print(6*7)").await;
    let unreachable = format!(
        "{LAST} return cell && cell.dataset.state === 'failed' && [cell.querySelector('.failure').textContent, \
         document.getElementById('pool-text').textContent]"
    );
    let shown = browser.wait_for("the unreachable server to show", 30, &unreachable).await;
    assert!(shown[0].as_str().unwrap().starts_with(&format!("Cannot reach http://{nobody}")), "{shown}");
    assert_eq!(shown[1], "Server unreachable");
    set_server(browser, &server.url).await;
    run_typed(browser, "print(6*7)").await;
    assert_eq!(finished(browser, "print(6*7)").await, json!(["ok", "42\n"]));
}

/// Replaces the address in the server field, as a user would type it.
async fn set_server(browser: &Browser, url: &str) {
    browser.eval("document.getElementById('server').value = ''", vec![]).await;
    browser.type_into("#server", url).await;
}
