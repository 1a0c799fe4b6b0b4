//! vdbi's image on the node, and the node ports of a release.

use std::path::PathBuf;
use std::process::Command;

use crate::kubelet::KubeletNode;

/// The image reference `scripts/build-image.sh` gives the archive (`$VDBI_IMAGE_REF`).
fn image_ref() -> String {
    std::env::var("VDBI_IMAGE_REF").unwrap_or_else(|_| "localhost/vdbi:dev".into())
}

/// Imports vdbi's image archive (`$VDBI_IMAGE_ARCHIVE`, which `platform/vdbi-platform test`
/// builds and sets) into the node's containerd, pinned; returns (repository, tag).
pub fn import_image(node: &KubeletNode) -> (String, String) {
    let archive = std::env::var_os("VDBI_IMAGE_ARCHIVE").map(PathBuf::from).unwrap_or_else(|| {
        panic!(
            "VDBI_IMAGE_ARCHIVE is not set: run `platform/vdbi-platform test` (it builds vdbi's image), \
             or `export VDBI_IMAGE_ARCHIVE=$(scripts/build-image.sh)`"
        )
    });
    assert!(
        archive.is_file(),
        "image archive {} missing: run scripts/build-image.sh",
        archive.display()
    );
    let reference = image_ref();
    let ctr = |args: &[&str]| {
        let out = Command::new(node.var("VDBI_KUBELET_CTR"))
            .args([
                "--address",
                node.var("VDBI_KUBELET_CONTAINERD_SOCK"),
                "--namespace",
                "k8s.io",
            ])
            .args(args)
            .output()
            .expect("running ctr");
        assert!(
            out.status.success(),
            "ctr {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let path = archive.to_string_lossy().into_owned();
    ctr(&[
        "images",
        "import",
        "--snapshotter",
        node.var("VDBI_KUBELET_SNAPSHOTTER"),
        "--label",
        "io.cri-containerd.pinned=pinned",
        &path,
    ]);
    assert!(
        ctr(&["images", "ls", "-q"]).lines().any(|l| l == reference),
        "{} did not give the image {reference} ($VDBI_IMAGE_REF)",
        archive.display()
    );
    let (repo, tag) = reference
        .rsplit_once(':')
        .expect("image reference with a tag");
    (repo.to_string(), tag.to_string())
}

/// `n` distinct TCP ports free on every address right now (the pods bind them on the node).
pub(super) fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("0.0.0.0:0").expect("a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}
