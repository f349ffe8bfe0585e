//! The CLI behaves as code ported from the TypeScript library expects: a hosted manifest named
//! in the environment implies the hosted preset, and exit statuses follow the seed's codes.

mod common;

use common::env;

/// A hosted bundle of local files: `manifest.json` beside its kernel and rootfs.
fn local_bundle(dir: &std::path::Path) -> std::path::PathBuf {
    let bundle = dir.join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    std::fs::write(bundle.join("vmlinux"), b"kernel").unwrap();
    std::fs::write(bundle.join("rootfs.ext4"), b"rootfs").unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 1, "bundleId": "local-one", "arch": std::env::consts::ARCH,
        "firecrackerVersion": "v1.12.1", "rootfsType": "ext4", "rootfsIsReadOnly": false,
        "bootArgs": "console=ttyS0", "kernel": {"path": "vmlinux"}, "rootfs": {"path": "rootfs.ext4"}
    });
    let path = bundle.join("manifest.json");
    std::fs::write(&path, manifest.to_string()).unwrap();
    path
}

#[test]
fn a_manifest_in_the_environment_implies_the_hosted_preset() {
    let Some(env) = env() else { return };
    let manifest = local_bundle(env.dir.path());
    let pull = |args: &[&str]| {
        let mut full = vec!["image", "pull", "--json"];
        full.extend_from_slice(args);
        env.cmd(&full).env("SMARTVM_BASE_IMAGE_MANIFEST_PATH", &manifest).output().unwrap()
    };
    for args in [&[][..], &["--preset", "hosted"]] {
        let out = pull(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        let bundle: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!((bundle["preset"].as_str(), bundle["bundleId"].as_str()), (Some("hosted"), Some("local-one")));
    }
    // Another preset beside the manifest: invalid input (exit 3), naming both.
    let out = pull(&["--preset", "lts"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("error[INVALID_CONFIG]") && stderr.contains("lts"), "{stderr}");
    assert!(stderr.contains(&*manifest.to_string_lossy()), "names the manifest: {stderr}");
    // The flag names a manifest the same way.
    let out = env.cmd(&["image", "pull", "--manifest", manifest.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}
