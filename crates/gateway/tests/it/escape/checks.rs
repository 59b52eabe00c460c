//! The checks that read an attempt's answer (verdict lines, refused system calls, 400 reasons) and host-side probes.

use std::io::ErrorKind;
use std::net::TcpListener;

use serde_json::Value;

use super::Check;

/// `result_text` of a 200 answer, or why there is none.
fn ok_text(status: u16, body: &Value) -> Result<String, String> {
    if status != 200 {
        return Err(format!("expected 200, got {status}"));
    }
    Ok(body["result_text"].as_str().unwrap_or_default().to_owned())
}

/// The non-empty lines of a 200 answer's text; at least one.
pub(super) fn verdict_lines(status: u16, body: &Value) -> Result<Vec<String>, String> {
    let text = ok_text(status, body)?;
    let lines: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect();
    if lines.is_empty() {
        return Err("no verdict printed".into());
    }
    Ok(lines)
}

/// Every verdict line says `BLOCKED`.
pub(super) fn blocked() -> Check {
    blocked_with(&[])
}

/// Every verdict line says `BLOCKED` and names one of `tokens` (an errno, an exception type...); none: any.
pub(super) fn blocked_with(tokens: &'static [&'static str]) -> Check {
    Box::new(move |status, body| {
        for line in verdict_lines(status, body)? {
            if !line.starts_with("BLOCKED") {
                return Err(format!("not contained: {line}"));
            }
            if !tokens.is_empty() && !line.split_whitespace().any(|w| tokens.contains(&w)) {
                return Err(format!("blocked, but not as expected ({tokens:?}): {line}"));
            }
        }
        Ok(())
    })
}

/// Every line is `SYSCALL -1 <errno>` with an errno of refusal: EPERM, EACCES or ENOSYS.
pub(super) fn syscalls_refused() -> Check {
    Box::new(|status, body| {
        for line in verdict_lines(status, body)? {
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.as_slice() {
                ["SYSCALL", "-1", "EPERM" | "EACCES" | "ENOSYS"] => {}
                _ => return Err(format!("system call not refused: {line}")),
            }
        }
        Ok(())
    })
}

/// A 400 whose `reason` is one of `reasons`.
pub(super) fn reason_in(reasons: &'static [&'static str]) -> Check {
    Box::new(move |status, body| {
        let reason = body["reason"].as_str().unwrap_or_default();
        if status == 400 && reasons.contains(&reason) {
            Ok(())
        } else {
            Err(format!("expected a 400 with reason {reasons:?}, got {status} {reason:?}"))
        }
    })
}

/// A 400 of the code raising `ename` (the kernel and its state survive).
pub(super) fn raised(ename: &'static str) -> Check {
    Box::new(move |status, body| {
        if status == 400 && body["reason"] == "error" && body["error"]["ename"] == ename {
            Ok(())
        } else {
            Err(format!("expected {ename} raised, got {status} {}", body["detail"]))
        }
    })
}

/// Any of `checks` passes.
pub(super) fn any_of(checks: Vec<Check>) -> Check {
    Box::new(move |status, body| {
        let mut reasons = Vec::new();
        for check in &checks {
            match check(status, body) {
                Ok(()) => return Ok(()),
                Err(reason) => reasons.push(reason),
            }
        }
        Err(reasons.join(" / "))
    })
}

/// `first`, and then the host-side `also`.
pub(super) fn and_then(first: Check, also: impl Fn() -> Result<(), String> + Send + Sync + 'static) -> Check {
    Box::new(move |status, body| {
        first(status, body)?;
        also()
    })
}

/// The server answered with a well-formed JSON answer: a 200, or a 400 naming its reason.
pub(super) fn valid_answer() -> Check {
    Box::new(|status, body| {
        if !body.is_object() {
            return Err(format!("not a JSON object answer ({status})"));
        }
        match status {
            200 if body["result_text"].is_string() || body["result_text"].is_null() => Ok(()),
            400 if body["reason"].is_string() && body["detail"].is_string() => Ok(()),
            _ => Err(format!("malformed answer ({status})")),
        }
    })
}

/// Nothing has connected to `listener` (non-blocking).
pub(super) fn untouched(listener: &TcpListener) -> Result<(), String> {
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(()),
        Err(e) => Err(format!("listener error: {e}")),
        Ok((_, from)) => Err(format!("the host listener got a connection from {from}")),
    }
}
