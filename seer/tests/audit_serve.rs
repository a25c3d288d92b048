//! `seer audit serve` over HTTP against a real key authority (the built `key-authority`
//! binary beside `seer`, as `tests/run.rs` needs): the page verifies the chain and lists every
//! entry; an anchor that does not match the log shows the problem instead of "verified".

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use seer::audit::AuditTarget;
use seer::audit_serve::{AuditView, router};
use seer::authority::AnalyticsAuthority;
use seer::process::{Binaries, output};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// `GET path` over HTTP/1.1: (status line, body).
async fn http_get(address: SocketAddr, path: &str) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect to the audit view");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").expect("a header block");
    (
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    )
}

/// Serves a view of `target` on a free loopback port.
async fn serve(target: AuditTarget, pem: String, anchor: PathBuf) -> SocketAddr {
    let view = AuditView::new(target, pem, Some(anchor));
    let listener = seer_web::WebListener::bind("127.0.0.1:0".parse().expect("address"), None)
        .await
        .expect("bind the audit view");
    let address = listener.local_addr();
    tokio::spawn(listener.serve(router(Arc::new(view)), std::future::pending()));
    address
}

#[tokio::test]
async fn the_view_verifies_lists_and_reports_a_bad_anchor() {
    let bin_dir = PathBuf::from(env!("CARGO_BIN_EXE_seer"))
        .parent()
        .expect("target directory")
        .to_path_buf();
    let work = tempfile::tempdir().expect("tempdir");
    let authority = AnalyticsAuthority::start(
        work.path(),
        Some(bin_dir.clone()),
        &[("ENABLED", "false".to_owned())],
        Instant::now(),
    )
    .await
    .expect("start the key authority");
    // Issuing a token is itself an audited grant: the log has entries.
    let token = authority
        .token("auditor", None)
        .await
        .expect("auditor token");
    let binaries = Binaries::locate(Some(bin_dir)).expect("binaries");
    let pem = output(
        &binaries,
        "key-authority",
        &["jwt-public-key"],
        &[(
            "SEER_KEY_AUTHORITY__AUTH__SIGNING_KEY_FILE".to_owned(),
            work.path().join("ka/jwt.pem").display().to_string(),
        )],
    )
    .await
    .expect("jwt public key");
    let target = AuditTarget {
        key_authority: authority.url().to_owned(),
        token,
    };
    // An audited refusal: a household token may not read the audit log.
    let household = authority
        .token("household", Some("home-1"))
        .await
        .expect("household token");
    let as_household = AuditTarget {
        key_authority: authority.url().to_owned(),
        token: household,
    };
    seer::audit::list(&as_household, None, None)
        .await
        .expect_err("a household may not list the audit log");

    let anchor = work.path().join("auditor-anchor");
    let address = serve(target.clone(), pem.clone(), anchor.clone()).await;
    let (status, page) = http_get(address, "/").await;
    assert!(status.contains("200"), "{status}");
    assert!(
        page.contains("data-testid=\"audit-verdict\" data-verified=\"true\""),
        "{page}"
    );
    assert!(page.contains("verified</span>"), "{page}");
    assert!(page.contains("first verification"), "{page}");
    assert!(page.contains("data-testid=\"audit-entry-1\""), "{page}");
    let head: u64 = page
        .split("data-testid=\"audit-head-sequence\">")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .and_then(|n| n.parse().ok())
        .expect("the head sequence");
    assert!(head >= 1);
    for seq in 1..=head {
        assert!(
            page.contains(&format!("data-testid=\"audit-entry-{seq}\"")),
            "entry {seq}"
        );
    }
    // The independent record: `seer audit list` sees the same number of entries.
    let listed = seer::audit::list(&target, None, None).await.expect("list");
    assert!(listed.len() as u64 >= head);

    // A second load checks against the anchor the first one saved.
    let (_, page) = http_get(address, "/?outcome=refused").await;
    assert!(page.contains("saved anchor at sequence"), "{page}");
    assert!(!page.contains("data-outcome=\"granted\""), "{page}");
    assert!(page.contains("data-outcome=\"refused\""), "{page}");

    // An anchor recording another hash for entry 1: the log "was rewritten".
    std::fs::write(
        &anchor,
        format!(
            "seer-auditor-anchor v1\nsequence 1\nhash {}\n",
            "00".repeat(32)
        ),
    )
    .expect("write a wrong anchor");
    let (status, page) = http_get(address, "/").await;
    assert!(status.contains("200"), "{status}");
    assert!(page.contains("data-verified=\"false\""), "{page}");
    assert!(page.contains("anchor mismatch"), "{page}");
    authority.stop().await;
}
