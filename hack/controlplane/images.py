"""Images without Docker or a registry: the pause image (an OCI archive written here around the
static pause binary), a Python base made from Debian packages with mmdebstrap, and the
operator's image built from the repository's Dockerfile by buildah, then imported into the
node's containerd.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import tarfile
import time
from pathlib import Path

from devkit import build, processes
from devkit.console import fail, log

from . import core

IMAGE_NAME = "zomro-backup-operator"
IMAGE_PACKAGES = ("buildah", "mmdebstrap", "uidmap")
# What the Dockerfile's stages expect of their base (python:3.11-slim-bookworm): `python` and
# `pip` on PATH, a CA bundle for pip, and pip allowed to install into the system interpreter.
BASE_PACKAGES = ("python3", "python3-pip", "python-is-python3", "ca-certificates")
KEEP_ARCHIVES = 3


def _arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def images_dir() -> Path:
    return build.cache_dir() / "images"


# ---------------------------------------------------------------------------------------------
# The pause image
# ---------------------------------------------------------------------------------------------


def _blob(blobs: dict[str, bytes], data: bytes) -> dict[str, object]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs[digest] = data
    return {"digest": digest, "size": len(data)}


def pause_archive(binary: Path, image: str) -> Path:
    """An OCI image archive holding only /pause, named `image` for `ctr images import`."""
    dest = images_dir() / f"pause-{image.rpartition(':')[2]}-{_arch()}.oci.tar"
    if dest.exists():
        return dest
    blobs: dict[str, bytes] = {}
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tar.gettarinfo(str(binary), arcname="pause")
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = 0
        with binary.open("rb") as handle:
            tar.addfile(info, handle)
    layer_desc = _blob(blobs, layer.getvalue())
    config = {
        "architecture": _arch(),
        "os": "linux",
        "config": {"Entrypoint": ["/pause"], "User": "65535:65535"},
        "rootfs": {"type": "layers", "diff_ids": [layer_desc["digest"]]},
    }
    config_desc = _blob(blobs, json.dumps(config).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config_desc},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **layer_desc}],
    }
    manifest_desc = _blob(blobs, json.dumps(manifest).encode())
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                **manifest_desc,
                "platform": {"architecture": _arch(), "os": "linux"},
                "annotations": {"io.containerd.image.name": image},
            }
        ],
    }
    files = {
        "oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
        "index.json": json.dumps(index).encode(),
        **{f"blobs/sha256/{d.removeprefix('sha256:')}": b for d, b in blobs.items()},
    }
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(f".tmp-{os.getpid()}")
    with tarfile.open(tmp, "w") as out:
        for name, data in files.items():
            entry = tarfile.TarInfo(name)
            entry.size = len(data)
            out.addfile(entry, io.BytesIO(data))
    tmp.rename(dest)
    return dest


# ---------------------------------------------------------------------------------------------
# buildah, the base and the operator image
# ---------------------------------------------------------------------------------------------


def buildah(*args: str, capture: bool = False) -> str:
    """buildah on a private storage in the cache (overlay, as root), output to stderr."""
    root = build.cache_dir() / "buildah"
    cmd = [
        "buildah",
        "--root",
        str(root / "storage"),
        "--runroot",
        str(root / "run"),
        "--storage-driver",
        "overlay",
        *args,
    ]
    return build.stream(cmd, capture, what=f"buildah {' '.join(args[:3])} ...")


def image_exists(ref: str) -> bool:
    out = buildah("images", "--format", "{{.Name}}:{{.Tag}}", capture=True)
    wanted = ref if "/" in ref else f"localhost/{ref}"
    return wanted in out.split()


def ensure_base(pins: dict[str, str]) -> str:
    """A python3 base from Debian packages (the Dockerfile's default base cannot be pulled
    here), tagged by what made it, so it is built once per suite and package list."""
    suite = pins["DEBIAN_SUITE"]
    key = hashlib.sha256(" ".join((suite, *BASE_PACKAGES)).encode()).hexdigest()[:12]
    ref = f"localhost/zomro-python-base:{suite}-{key}"
    if image_exists(ref):
        return ref
    work = build.cache_dir() / "buildah" / "base"
    work.mkdir(parents=True, exist_ok=True)
    rootfs = work / f"{suite}-{key}.tar"
    started = time.monotonic()
    log(f"mmdebstrap {suite} with {', '.join(BASE_PACKAGES)} (a minute or two, once)")
    build.stream(
        [
            "mmdebstrap",
            "--variant=minbase",
            "--mode=root",
            "--aptopt=APT::Install-Recommends false",
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
            f"--include={','.join(BASE_PACKAGES)}",
            # Like the official image, pip may install into the image's interpreter (PEP 668's
            # marker is for a system shared with apt, not for an image).
            '--customize-hook=rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED',
            '--customize-hook=rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*',
            suite,
            str(rootfs),
        ],
        what=f"mmdebstrap {suite}",
    )
    container = buildah("from", "scratch", capture=True).strip()
    try:
        buildah("add", container, str(rootfs), "/")
        buildah(
            "config",
            "--env",
            "LANG=C.UTF-8",
            "--env",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--cmd",
            "python3",
            "--label",
            f"org.opencontainers.image.description=Debian {suite} minbase with "
            + " ".join(BASE_PACKAGES),
            container,
        )
        buildah("commit", "--rm", container, ref)
    except SystemExit:
        buildah("rm", container)
        raise
    rootfs.unlink()
    log(f"base {ref} in {time.monotonic() - started:.0f}s")
    return ref


def context_digest() -> str:
    """A digest of the Dockerfile and of what .dockerignore lets into the build context."""
    digest = hashlib.sha256()
    allowed = [
        line[1:].rstrip("/")
        for line in (core.REPO / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    paths = [core.REPO / "Dockerfile", core.REPO / ".dockerignore"]
    for name in allowed:
        top = core.REPO / name
        paths.extend(sorted(top.rglob("*")) if top.is_dir() else [top])
    for path in paths:
        if path.is_file() and "__pycache__" not in path.parts and ".egg-info" not in str(path):
            digest.update(str(path.relative_to(core.REPO)).encode() + b"\0")
            digest.update(path.read_bytes())
    return digest.hexdigest()


def host_ca_volume() -> list[str]:
    """pip in the build trusts what this machine trusts (e.g. a TLS-inspecting egress proxy's
    CA): the machine's CA bundle is mounted read-only over the base's for the RUN steps only,
    so it never ends up in a layer."""
    bundle = Path("/etc/ssl/certs/ca-certificates.crt")
    return ["--volume", f"{bundle}:{bundle}:ro"] if bundle.is_file() else []


def project_version() -> str:
    for line in (core.REPO / "pyproject.toml").read_text().splitlines():
        if line.startswith("version = "):
            return line.partition("=")[2].strip().strip('"')
    fail("no version in pyproject.toml")


def build_image(tag: str | None) -> str:
    """Build (once per source state) the operator image; returns NAME:TAG."""
    pins = core.read_pins()
    from . import node

    node.ensure_packages(IMAGE_PACKAGES)
    base = ensure_base(pins)
    base_id = buildah("inspect", "--format", "{{.FromImageID}}", base, capture=True).strip()
    version = project_version()
    key = hashlib.sha256((context_digest() + base_id).encode()).hexdigest()[:12]
    ref = f"{IMAGE_NAME}:{version}-dev.{key}"
    if not image_exists(ref):
        started = time.monotonic()
        log(f"buildah bud {ref} from the Dockerfile on {base}")
        buildah(
            "bud",
            "--isolation",
            "chroot",
            *host_ca_volume(),
            "--build-arg",
            f"PYTHON_IMAGE={base}",
            "--build-arg",
            f"VERSION={version}",
            # The Dockerfile's labels name the official base; say which one this is.
            "--label",
            f"org.opencontainers.image.base.name={base}",
            "--label",
            f"org.opencontainers.image.base.digest=sha256:{base_id}",
            "-f",
            str(core.REPO / "Dockerfile"),
            "-t",
            ref,
            str(core.REPO),
        )
        log(f"built {ref} in {time.monotonic() - started:.0f}s")
    if tag:
        wanted = f"{IMAGE_NAME}:{tag}"
        buildah("tag", ref, wanted)
        ref = wanted
    archive = images_dir() / f"{ref.replace(':', '_')}.tar"
    if not archive.exists():
        archive.parent.mkdir(parents=True, exist_ok=True)
        tmp = archive.with_suffix(f".tmp-{os.getpid()}")
        buildah("push", ref, f"docker-archive:{tmp}:{ref}")
        tmp.rename(archive)
    prune_archives()
    return ref


def prune_archives() -> None:
    archives = sorted(
        (p for p in images_dir().glob(f"{IMAGE_NAME}_*.tar")),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for old in archives[KEEP_ARCHIVES:]:
        old.unlink()


def operator_archives() -> list[Path]:
    return sorted(images_dir().glob(f"{IMAGE_NAME}_*.tar")) if images_dir().is_dir() else []


def load(state: Path, archives: list[Path]) -> None:
    """Import image archives into the node's containerd (k8s.io namespace, where the CRI
    looks), so pods use them without pulling."""
    from . import node

    data = processes.load_state(state) or {}
    bins = Path(data["binaries"]["containerd"]).parent
    for archive in archives:
        node.ctr(state, bins, "images", "import", str(archive))
        log(f"imported {archive.name} into the node")


def cmd_image(tag: str | None) -> None:
    ref = build_image(tag)
    state = core.state_dir()
    running = core.is_running(state)
    if running and running.get("node"):
        load(state, [images_dir() / f"{ref.replace(':', '_')}.tar"])
    else:
        log(
            f"no node runs from {state}: the image is built and cached; "
            "`hack/control-plane up --node` imports it"
        )
    print(ref, flush=True)
