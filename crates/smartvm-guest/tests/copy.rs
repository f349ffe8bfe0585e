//! `copy_in` / `copy_out` of a 100 MiB tree through a real `smartvm-guest`: contents, modes and
//! links equal; confinement to the named directory.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::Agent;
use sha2::{Digest, Sha256};
use smartvm::error::ErrorCode;

/// path → (kind, mode, uid, sha256 or link target)
fn snapshot(root: &Path) -> BTreeMap<String, (char, u32, u32, String)> {
    let mut out = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let name = path.strip_prefix(root).unwrap().display().to_string();
        let (kind, content) = if meta.is_dir() {
            pending.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            ('d', String::new())
        } else if meta.file_type().is_symlink() {
            ('l', std::fs::read_link(&path).unwrap().display().to_string())
        } else {
            ('f', format!("{:x}", Sha256::digest(std::fs::read(&path).unwrap())))
        };
        out.insert(name, (kind, meta.mode() & 0o7777, meta.uid(), content));
    }
    out
}

fn build_tree(root: &Path) {
    for d in 0..10 {
        let dir = root.join(format!("dir{d}/nested"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..10 {
            let seed = (d * 10 + f) as u8;
            let bytes: Vec<u8> = (0..1 << 20).map(|i: u32| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
            let file = dir.join(format!("file{f}"));
            std::fs::write(&file, bytes).unwrap();
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600 + (f as u32 % 8) * 0o10)).unwrap();
        }
    }
    std::fs::set_permissions(root.join("dir3"), std::fs::Permissions::from_mode(0o711)).unwrap();
    std::os::unix::fs::symlink("dir0/nested/file0", root.join("link")).unwrap();
    std::fs::write(root.join("owned-by-nobody"), "x").unwrap();
    std::os::unix::fs::chown(root.join("owned-by-nobody"), Some(65534), Some(65534)).unwrap();
}

#[tokio::test]
async fn a_hundred_mebibyte_tree_goes_in_and_out_unchanged() {
    let agent = Agent::start(&[]).await;
    let client = agent.client();
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("tree");
    build_tree(&source);
    let guest_dir = work.path().join("guest");
    std::fs::create_dir(&guest_dir).unwrap();
    let report = client.copy_in(&source, guest_dir.to_str().unwrap(), Some(OsStr::new("copied"))).await.unwrap();
    assert_eq!(report.entries, 10 + 10 + 100 + 2 + 1, "dirs, nested dirs, files, link and nobody's file, the top");
    assert!(report.bytes > 100 << 20);
    assert_eq!(snapshot(&guest_dir.join("copied")), snapshot(&source));

    let back = work.path().join("back");
    std::fs::create_dir(&back).unwrap();
    let guest_tree = guest_dir.join("copied");
    let out = client.copy_out(guest_tree.to_str().unwrap(), &back, None).await.unwrap();
    assert_eq!(out.entries, report.entries);
    assert_eq!(snapshot(&back.join("copied")), snapshot(&source));
    let nobody = std::fs::metadata(back.join("copied/owned-by-nobody")).unwrap();
    assert_eq!((nobody.uid(), nobody.gid()), (65534, 65534), "ownership kept both ways");
}

#[tokio::test]
async fn a_single_file_can_be_renamed_on_the_way_out() {
    let agent = Agent::start(&[]).await;
    let client = agent.client();
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("a.txt"), "hello").unwrap();
    let out = client.copy_out(work.path().join("a.txt").to_str().unwrap(), work.path(), Some("b.txt")).await.unwrap();
    assert_eq!(out.entries, 1);
    assert_eq!(std::fs::read_to_string(work.path().join("b.txt")).unwrap(), "hello");
}

#[tokio::test]
async fn copies_fail_clearly_and_write_nothing_outside_their_directory() {
    let agent = Agent::start(&[]).await;
    let client = agent.client();
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("f"), "x").unwrap();
    let missing_dir = client.copy_in(&work.path().join("f"), "/no/such/dir", None).await.unwrap_err();
    assert_eq!(missing_dir.code(), ErrorCode::GuestRefused);
    let not_a_dir =
        client.copy_in(&work.path().join("f"), work.path().join("f").to_str().unwrap(), None).await.unwrap_err();
    assert_eq!(not_a_dir.code(), ErrorCode::GuestRefused);
    let relative = client.copy_out("relative/path", work.path(), None).await.unwrap_err();
    assert_eq!(relative.code(), ErrorCode::GuestRefused);
    let bad_name = client.copy_out(work.path().join("f").to_str().unwrap(), work.path(), Some("../up")).await;
    assert_eq!(bad_name.unwrap_err().code(), ErrorCode::GuestRefused);
    let no_local = client.copy_in(&work.path().join("absent"), "/tmp", None).await.unwrap_err();
    assert_eq!(no_local.code(), ErrorCode::IoError);
    assert!(client.hello().await.is_ok(), "the agent is unharmed");
}
