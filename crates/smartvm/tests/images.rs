#![cfg(feature = "images")]
//! Images against a local HTTP server with GitHub's and S3's shapes (no internet needed).

#[allow(dead_code)]
mod logs {
    include!("common/logs.rs");
}
mod fake;

use std::path::Path;

use fake::{FakeServer, Route};
use smartvm::images::{BaseImageManager, BaseImageOptions, BundleSource, Expect, ImageManager, NoProgress, Preset};

const CI: &str = "firecracker-ci";

/// A bucket with three trains: v1.7 (LTS, ext4), v1.11 (ext4 only), v1.12 (squashfs + ext4).
async fn server_with_trains() -> FakeServer {
    let s = FakeServer::start().await;
    s.latest("v1.12.1");
    for (key, data) in [
        ("v1.7/x86_64/vmlinux-5.10.209", "k-5.10.209"),
        ("v1.7/x86_64/vmlinux-5.10.210", "k-5.10.210"),
        ("v1.7/x86_64/ubuntu-22.04.ext4", "rootfs-22.04-ext4"),
        ("v1.7/x86_64/ubuntu-22.04.id_rsa", "key"),
        ("v1.11/x86_64/vmlinux-5.10.230", "k-5.10.230"),
        ("v1.11/x86_64/ubuntu-24.04.ext4", "r"),
        ("v1.12/x86_64/vmlinux-5.10.239", "k-5.10.239"),
        ("v1.12/x86_64/vmlinux-6.1.9", "k-6.1.9"),
        ("v1.12/x86_64/vmlinux-6.1.141", "kernel-6.1.141"),
        ("v1.12/x86_64/vmlinux-6.1.141.config", "config"),
        ("v1.12/x86_64/ubuntu-22.04.squashfs", "sq-22.04"),
        ("v1.12/x86_64/ubuntu-24.04.squashfs", "squashfs-24.04"),
        ("v1.12/x86_64/ubuntu-24.04.ext4", "ext4-24.04"),
        ("v1.12/aarch64/vmlinux-6.1.200", "arm"),
    ] {
        s.object(&format!("{CI}/{key}"), data);
    }
    s
}

fn managers(s: &FakeServer, dir: &Path, keep: usize) -> (ImageManager, BaseImageManager) {
    let images = ImageManager::new(dir.join("data"), "x86_64", s.mirrors());
    let base = BaseImageManager::new(images.clone(), dir.join("cache"), keep).unwrap();
    (images, base)
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir).map_or(vec![], |rd| {
        rd.flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.') && n != ".locks")
            .collect()
    })
}

#[tokio::test]
async fn latest_resolves_newest_train_kernel_and_prefers_squashfs() {
    let s = server_with_trains().await;
    let dir = tempfile::tempdir().unwrap();
    let (_, base) = managers(&s, dir.path(), 2);
    let b = base.ensure_base_image(&BaseImageOptions::default(), &NoProgress).await.unwrap();
    assert_eq!(b.firecracker_version, "v1.12.1");
    assert_eq!(std::fs::read_to_string(&b.kernel_image_path).unwrap(), "kernel-6.1.141");
    assert_eq!(std::fs::read_to_string(&b.rootfs_path).unwrap(), "squashfs-24.04");
    assert_eq!((b.rootfs_type.as_str(), b.rootfs_is_read_only), ("squashfs", true));
    assert!(b.boot_args.contains("rootfstype=squashfs"));
    assert_eq!(b.kernel_sha256, hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"kernel-6.1.141")));
    assert_eq!(b.rootfs_size_bytes, 14);
    assert!(matches!(&b.source, BundleSource::FirecrackerCi { train, .. } if train == "v1.12"));
    assert!(b.kernel_image_path.parent().unwrap().join("manifest.json").exists());
    assert!(s.hits("/s3/") >= 2, "the listing was paginated");
}

#[tokio::test]
async fn lts_uses_the_pinned_train() {
    let s = server_with_trains().await;
    let dir = tempfile::tempdir().unwrap();
    let (_, base) = managers(&s, dir.path(), 2);
    let opts = BaseImageOptions { preset: Some(Preset::Lts), ..Default::default() };
    let b = base.ensure_base_image(&opts, &NoProgress).await.unwrap();
    assert_eq!(b.firecracker_version, "v1.7.0");
    assert_eq!(std::fs::read_to_string(&b.kernel_image_path).unwrap(), "k-5.10.210");
    assert_eq!((b.rootfs_type.as_str(), b.rootfs_is_read_only), ("ext4", false));
}

#[tokio::test]
async fn firecracker_release_is_verified_and_installed_atomically() {
    let s = FakeServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (images, _) = managers(&s, dir.path(), 2);
    s.latest("v1.12.1");
    assert_eq!(images.latest_version().await.unwrap(), "v1.12.1");
    s.release("v1.12.1", b"#!fc-binary", b"#!jailer-binary", false);
    let fc = images.ensure_firecracker("v1.12.1", &NoProgress).await.unwrap();
    assert_eq!(fc, images.firecracker_path("v1.12.1"));
    assert_eq!(std::fs::read(&fc).unwrap(), b"#!fc-binary");
    assert_eq!(std::fs::read(images.jailer_path("v1.12.1")).unwrap(), b"#!jailer-binary");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&fc).unwrap().permissions().mode() & 0o777, 0o755);
    let tgz_path = "/gh/firecracker-microvm/firecracker/releases/download/v1.12.1/firecracker-v1.12.1-x86_64.tgz";
    assert_eq!(s.hits(tgz_path), 1);
    images.ensure_firecracker("1.12.1", &NoProgress).await.unwrap();
    assert_eq!(s.hits(tgz_path), 1, "present binaries are not downloaded again");
    let bin_dir = images.bin_dir("v1.12.1");
    let mut names: Vec<String> =
        std::fs::read_dir(&bin_dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["firecracker", "jailer"], "no tarball or temp files left");

    // A binary that does not match SHA256SUMS is never installed.
    s.release("v1.13.0", b"fc", b"jl", true);
    let err = images.download_firecracker("v1.13.0", &NoProgress).await.unwrap_err();
    assert_eq!(err.code(), "DOWNLOAD_FAILED");
    assert!(err.to_string().contains("SHA256SUMS"), "{err}");
    assert!(!images.bin_dir("v1.13.0").exists(), "a failed download leaves no bin/<version>/");

    // A tarball that does not match its .sha256.txt is rejected before extraction.
    s.release("v1.14.0", b"fc", b"jl", false);
    let base = "/gh/firecracker-microvm/firecracker/releases/download/v1.14.0/firecracker-v1.14.0-x86_64.tgz";
    s.data(&format!("{base}.sha256.txt"), format!("{}  firecracker-v1.14.0-x86_64.tgz", "ab".repeat(32)));
    let err = images.download_firecracker("v1.14.0", &NoProgress).await.unwrap_err();
    assert!(format!("{err:?}").contains("SHA-256 mismatch"), "the cause is chained: {err:?}");
    assert!(!images.bin_dir("v1.14.0").exists());
}

#[tokio::test]
async fn failed_downloads_leave_no_file() {
    let s = FakeServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (images, _) = managers(&s, dir.path(), 2);
    s.route("/files/truncated", Route::Truncated { data: vec![7u8; 64 * 1024].into(), sent: 1000 });
    let err = images
        .download_kernel(&s.url("/files/truncated"), "vmlinux", &Expect::default(), &NoProgress)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "DOWNLOAD_FAILED");
    assert!(std::fs::read_dir(images.kernels_dir()).unwrap().next().is_none(), "no partial file");

    let err =
        images.download_rootfs(&s.url("/files/missing"), "r.ext4", &Expect::default(), &NoProgress).await.unwrap_err();
    assert_eq!(err.code(), "DOWNLOAD_FAILED");
    assert!(err.to_string().contains("404"));

    s.data("/files/k", "kernel-bytes");
    let wrong = Expect { sha256: Some("0".repeat(64)), size: None };
    assert_eq!(
        images.download_kernel(&s.url("/files/k"), "k", &wrong, &NoProgress).await.unwrap_err().code(),
        "DOWNLOAD_FAILED"
    );
    let short = Expect { sha256: None, size: Some(5) };
    let err = images.download_kernel(&s.url("/files/k"), "k", &short, &NoProgress).await.unwrap_err();
    assert_eq!(err.code(), "DOWNLOAD_FAILED");
    assert!(err.to_string().contains("cut off"), "more than declared is not accepted: {err}");
    assert!(std::fs::read_dir(images.kernels_dir()).unwrap().next().is_none());
    let bad_name = images.download_kernel(&s.url("/files/k"), "../k", &Expect::default(), &NoProgress).await;
    assert_eq!(bad_name.unwrap_err().code(), "DOWNLOAD_FAILED");
    let ok = images.download_kernel(&s.url("/files/k"), "k", &Expect::default(), &NoProgress).await.unwrap();
    assert_eq!(std::fs::read(ok).unwrap(), b"kernel-bytes");
}

#[tokio::test]
async fn malformed_metadata_gets_clear_errors() {
    let s = server_with_trains().await;
    let dir = tempfile::tempdir().unwrap();
    let (images, base) = managers(&s, dir.path(), 2);
    s.override_listing("<html>not a bucket");
    let err = base.ensure_base_image(&BaseImageOptions::default(), &NoProgress).await.unwrap_err();
    assert_eq!(err.code(), "BASE_IMAGE_RESOLVE_FAILED");
    assert!(err.to_string().contains("bucket listing"), "{err}");
    s.latest("not-json\"");
    s.data("/api/repos/firecracker-microvm/firecracker/releases/latest", "{\"tag\": 1");
    assert_eq!(images.latest_version().await.unwrap_err().code(), "VERSION_FETCH_FAILED");
    s.route("/api/repos/firecracker-microvm/firecracker/releases/latest", Route::Status(503));
    assert_eq!(images.latest_version().await.unwrap_err().code(), "VERSION_FETCH_FAILED");
    assert!(leftovers(base.cache_dir()).is_empty());
}

fn hosted_manifest(s: &FakeServer, id: &str, kernel: &str, rootfs: &str) -> String {
    let sha = |d: &str| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(d.as_bytes()));
    s.data(&format!("/hosted/{id}/vmlinux"), kernel.to_string());
    s.data(&format!("/hosted/{id}/rootfs.ext4"), rootfs.to_string());
    let manifest = serde_json::json!({
        "schemaVersion": 1, "bundleId": id, "arch": "x86_64", "firecrackerVersion": "v1.12.1",
        "rootfsType": "ext4", "rootfsIsReadOnly": false, "bootArgs": "console=ttyS0",
        "kernel": {"url": s.url(&format!("/hosted/{id}/vmlinux")), "sha256": sha(kernel), "sizeBytes": kernel.len()},
        "rootfs": {"url": s.url(&format!("/hosted/{id}/rootfs.ext4")), "sha256": sha(rootfs)}
    });
    let path = format!("/hosted/{id}.manifest.json");
    s.data(&path, manifest.to_string());
    s.url(&path)
}

fn hosted(url: &str) -> BaseImageOptions {
    BaseImageOptions { preset: Some(Preset::Hosted), manifest_url: Some(url.to_string()), ..Default::default() }
}

#[tokio::test]
async fn retention_evicts_least_recently_used() {
    let s = FakeServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (_, base) = managers(&s, dir.path(), 2);
    let (a, b, c) = (
        hosted_manifest(&s, "a", "ka", "ra"),
        hosted_manifest(&s, "b", "kb", "rb"),
        hosted_manifest(&s, "c", "kc", "rc"),
    );
    base.ensure_base_image(&hosted(&a), &NoProgress).await.unwrap();
    base.ensure_base_image(&hosted(&b), &NoProgress).await.unwrap();
    base.ensure_base_image(&hosted(&a), &NoProgress).await.unwrap(); // a is now the most recent
    assert_eq!(s.hits("/hosted/a/vmlinux"), 1, "reused from the cache");
    let (logs, guard) = logs::capture();
    base.ensure_base_image(&hosted(&c), &NoProgress).await.unwrap();
    drop(guard);
    let warned = logs.text();
    assert!(
        warned.contains("WARN")
            && warned.contains("evicted least recently used base image")
            && warned.contains("bundle=b"),
        "{warned}"
    );
    let ids: Vec<String> = base.list().unwrap().into_iter().map(|b| b.bundle_id).collect();
    assert_eq!(ids, ["c", "a"], "b was least recently used");
    assert!(!base.cache_dir().join("b").exists());
    assert_eq!(base.prune_to(1, Some("a")).unwrap(), ["c"]);
    assert_eq!(base.list().unwrap().len(), 1);
    assert_eq!(
        BaseImageManager::new(ImageManager::new(dir.path(), "x86_64", s.mirrors()), dir.path(), 0).unwrap_err().code(),
        "INVALID_BASE_IMAGE_CACHE_LIMIT"
    );
    assert_eq!(base.prune_to(0, None).unwrap_err().code(), "INVALID_BASE_IMAGE_CACHE_LIMIT");
}

#[tokio::test]
async fn corrupted_cache_is_fetched_again_and_bad_checksums_cache_nothing() {
    let s = FakeServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (_, base) = managers(&s, dir.path(), 2);
    let url = hosted_manifest(&s, "v", "kernel", "rootfs-data");
    let first = base.ensure_base_image(&hosted(&url), &NoProgress).await.unwrap();
    std::fs::write(&first.rootfs_path, "rootfs-dat!").unwrap(); // same size, other bytes
    let again = base.ensure_base_image(&hosted(&url), &NoProgress).await.unwrap();
    assert_eq!(std::fs::read_to_string(&again.rootfs_path).unwrap(), "rootfs-data");
    assert_eq!(s.hits("/hosted/v/rootfs.ext4"), 2, "re-fetched after failing verification");
    let forced = BaseImageOptions { force_download: true, ..hosted(&url) };
    base.ensure_base_image(&forced, &NoProgress).await.unwrap();
    assert_eq!(s.hits("/hosted/v/rootfs.ext4"), 3);

    let bad = hosted_manifest(&s, "bad", "kernel", "rootfs");
    s.data("/hosted/bad/rootfs.ext4", "tampered");
    let err = base.ensure_base_image(&hosted(&bad), &NoProgress).await.unwrap_err();
    assert_eq!(err.code(), "BASE_IMAGE_PREPARE_FAILED", "the seed's code for a base image: {err}");
    assert!(format!("{err:?}").contains("SHA-256 mismatch"), "the cause is chained: {err:?}");
    assert!(!base.cache_dir().join("bad").exists());
    assert!(leftovers(base.cache_dir()).is_empty(), "no temp dirs: {:?}", leftovers(base.cache_dir()));
    let locks: Vec<_> =
        std::fs::read_dir(base.cache_dir().join(".locks")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(locks, [std::ffi::OsString::from("v.lock")], "a failed pull leaves no lock file");

    s.data("/hosted/traversal.json", r#"{"schemaVersion":1,"bundleId":"../x","arch":"x86_64","firecrackerVersion":"v1.12.1","rootfsType":"ext4","rootfsIsReadOnly":false,"bootArgs":"a","kernel":{"path":"/k"},"rootfs":{"path":"/r"}}"#);
    let err = base.ensure_base_image(&hosted(&s.url("/hosted/traversal.json")), &NoProgress).await.unwrap_err();
    assert_eq!(err.code(), "INVALID_BASE_IMAGE_MANIFEST");
    assert!(err.to_string().contains("bundleId"));
    s.route("/hosted/gone.json", Route::Status(404));
    let err = base.ensure_base_image(&hosted(&s.url("/hosted/gone.json")), &NoProgress).await.unwrap_err();
    assert_eq!(err.code(), "BASE_IMAGE_MANIFEST_FAILED");
}

#[tokio::test]
async fn concurrent_pulls_of_one_bundle_do_not_corrupt_the_cache() {
    let s = FakeServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (_, base) = managers(&s, dir.path(), 2);
    let big = "x".repeat(4 << 20);
    let url = hosted_manifest(&s, "shared", "kernel", &big);
    let (b1, b2) = (base.clone(), base.clone());
    let (u1, u2) = (url.clone(), url.clone());
    let t1 = tokio::spawn(async move { b1.ensure_base_image(&hosted(&u1), &NoProgress).await });
    let t2 = tokio::spawn(async move { b2.ensure_base_image(&hosted(&u2), &NoProgress).await });
    let (r1, r2) = (t1.await.unwrap().unwrap(), t2.await.unwrap().unwrap());
    assert_eq!(r1.rootfs_path, r2.rootfs_path);
    assert_eq!(std::fs::read_to_string(&r1.rootfs_path).unwrap(), big);
    assert_eq!(s.hits("/hosted/shared/rootfs.ext4"), 1, "the second pull waited and reused the first");
    assert!(leftovers(base.cache_dir()).is_empty());
}

#[tokio::test]
async fn blank_and_cloned_rootfs() {
    if std::process::Command::new("mkfs.ext4").arg("-V").output().is_err() {
        assert!(std::env::var("SMARTVM_REQUIRE_KVM").is_err(), "mkfs.ext4 missing in CI");
        return;
    }
    let s = FakeServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (images, _) = managers(&s, dir.path(), 2);
    let blank = images.create_blank_rootfs("blank.ext4", 16).await.unwrap();
    assert_eq!(blank, images.rootfs_dir().join("blank.ext4"));
    let clone = images.clone_rootfs(&blank, "clone.ext4").await.unwrap();
    assert_eq!(std::fs::read(&clone).unwrap(), std::fs::read(&blank).unwrap());
    assert_eq!(images.create_blank_rootfs("a/b", 16).await.unwrap_err().code(), "ROOTFS_CREATE_FAILED");
    assert_eq!(images.clone_rootfs(&blank, "..").await.unwrap_err().code(), "ROOTFS_CLONE_FAILED");
}

#[tokio::test]
async fn smartvm_ensure_binary_downloads_when_nothing_is_local() {
    let s = FakeServer::start().await;
    s.latest("v1.12.1");
    s.release("v1.12.1", b"#!downloaded-fc", b"#!downloaded-jailer", false);
    let dir = tempfile::tempdir().unwrap();
    let options = smartvm::SmartVmOptions {
        data_dir: dir.path().join("data"),
        mirrors: s.mirrors(),
        ..smartvm::SmartVmOptions::from_lookup(|_| None)
    };
    let sv = smartvm::SmartVm::new(options);
    assert_eq!(sv.find_binary().unwrap_err().code(), "BINARY_NOT_FOUND");
    let path = sv.ensure_binary(&NoProgress).await.unwrap();
    assert_eq!(path, dir.path().join("data/bin/v1.12.1/firecracker"));
    assert_eq!(std::fs::read(&path).unwrap(), b"#!downloaded-fc");
    assert_eq!(sv.find_binary().unwrap(), path, "found locally from now on");
}

/// A hosted manifest named any of the seed's four ways (URL or path, in the call's options or
/// through the orchestrator's environment) selects the hosted preset without naming it; a
/// manifest beside another named preset is refused before anything is fetched.
#[tokio::test]
async fn a_manifest_implies_the_hosted_preset_all_four_ways() {
    let s = FakeServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = hosted_manifest(&s, "four", "kernel-4", "rootfs-4");
    let local = dir.path().join("four.manifest.json");
    let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
    std::fs::write(&local, text).unwrap();
    let orchestrator = |env: &[(&str, String)]| {
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        let mut options =
            smartvm::SmartVmOptions::from_lookup(|k| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()));
        options.data_dir = dir.path().join("data");
        options.base_image_cache_dir = Some(dir.path().join("cache"));
        options.mirrors = s.mirrors();
        smartvm::SmartVm::new(options)
    };
    let path_str = local.display().to_string();
    let ways = [
        ("options.manifest_url", BaseImageOptions { manifest_url: Some(url.clone()), ..Default::default() }, vec![]),
        (
            "options.manifest_path",
            BaseImageOptions { manifest_path: Some(local.clone()), ..Default::default() },
            vec![],
        ),
        (
            "SMARTVM_BASE_IMAGE_MANIFEST_URL",
            BaseImageOptions::default(),
            vec![("SMARTVM_BASE_IMAGE_MANIFEST_URL", url.clone())],
        ),
        (
            "SMARTVM_BASE_IMAGE_MANIFEST_PATH",
            BaseImageOptions::default(),
            vec![("SMARTVM_BASE_IMAGE_MANIFEST_PATH", path_str.clone())],
        ),
    ];
    for (way, options, env) in ways {
        let sv = orchestrator(&env);
        let force = BaseImageOptions { force_download: true, ..options.clone() };
        let b = sv.ensure_base_image(&force, &NoProgress).await.unwrap_or_else(|e| panic!("{way}: {e}"));
        assert_eq!((b.preset.as_str(), b.bundle_id.as_str()), ("hosted", "four"), "{way}");
        assert_eq!(std::fs::read_to_string(&b.kernel_image_path).unwrap(), "kernel-4", "{way}");
        // Naming the hosted preset as well is the same request.
        let named = BaseImageOptions { preset: Some(Preset::Hosted), ..options.clone() };
        assert_eq!(sv.ensure_base_image(&named, &NoProgress).await.unwrap().bundle_id, "four", "{way}");
        // Another named preset beside the manifest: INVALID_CONFIG naming both, nothing fetched.
        let hits = s.hits("/hosted/four/vmlinux");
        let lts = BaseImageOptions { preset: Some(Preset::Lts), ..options };
        let err = sv.ensure_base_image(&lts, &NoProgress).await.unwrap_err();
        assert_eq!(err.code(), "INVALID_CONFIG", "{way}: {err}");
        let text = err.to_string();
        assert!(text.contains("lts") && (text.contains(&url) || text.contains(&path_str)), "{way}: {text}");
        assert_eq!(s.hits("/hosted/four/vmlinux"), hits, "{way}: nothing fetched");
    }
    assert_eq!(s.hits("/api/repos/firecracker-microvm/firecracker/releases/latest"), 0, "`latest` never asked");
    let err = orchestrator(&[])
        .ensure_base_image(&BaseImageOptions { preset: Some(Preset::Hosted), ..Default::default() }, &NoProgress)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "BASE_IMAGE_MANIFEST_FAILED", "hosted without any manifest: {err}");
}

/// The seed's manager-level hosted manifest: calls that name none use it, as `hosted`.
#[tokio::test]
async fn a_managers_hosted_manifest_serves_calls_that_name_none() {
    let s = FakeServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = hosted_manifest(&s, "managed", "km", "rm");
    let (_, base) = managers(&s, dir.path(), 2);
    let base = base.with_hosted_manifest(Some(url), None);
    for options in
        [BaseImageOptions::default(), BaseImageOptions { preset: Some(Preset::Hosted), ..Default::default() }]
    {
        let b = base.ensure_base_image(&options, &NoProgress).await.unwrap();
        assert_eq!((b.bundle_id.as_str(), b.preset.as_str()), ("managed", "hosted"));
    }
    let lts = BaseImageOptions { preset: Some(Preset::Lts), ..Default::default() };
    assert_eq!(base.ensure_base_image(&lts, &NoProgress).await.unwrap_err().code(), "INVALID_CONFIG");
}
