"""The control plane build (infra/kube/build.py): exact pins, stamped releases, a warm run that builds nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from infra.kube import build as kube_build


def test_every_component_is_pinned_to_an_exact_version_with_a_committed_go_sum() -> None:
    """Each Go module names one release of what it builds, and carries its go.sum (integrity without a lookup)."""
    versions = {c.name: kube_build.required_version(c) for c in kube_build.COMPONENTS}
    assert versions == {"etcd": "v3.5.21", "kubernetes": "v1.34.2", "kwok": "v0.7.0", "metrics-server": "v0.7.2"}
    for component in kube_build.COMPONENTS:
        go_sum = (component.module_dir / "go.sum").read_text()
        assert f"{component.version_module} {versions[component.name]} h1:" in go_sum, component.name


def test_kubernetes_binaries_report_the_release_they_are_built_from() -> None:
    """The link flags stamp gitVersion/gitMajor/gitMinor, so /version is v1.34.2, not v0.0.0-master."""
    [kubernetes] = [c for c in kube_build.COMPONENTS if c.name == "kubernetes"]
    flags = kube_build.ldflags(kubernetes)
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        assert f"-X {pkg}.gitVersion=v1.34.2" in flags
        assert f"-X {pkg}.gitMajor=1" in flags and f"-X {pkg}.gitMinor=34" in flags


def test_a_built_cache_builds_nothing_and_never_calls_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With every binary present and every stamp current, build() checks stamps only."""
    bin_dir = kube_build.bin_dir(tmp_path)
    bin_dir.mkdir(parents=True)
    for component in kube_build.COMPONENTS:
        for binary in component.binaries:
            (bin_dir / binary).write_text("")
        (bin_dir / f".{component.name}.stamp").write_text(kube_build.stamp_key(component))

    def no_go() -> str:
        raise AssertionError("a warm build must not run Go")

    monkeypatch.setattr(kube_build, "find_go", no_go)
    lines: list[str] = []
    assert kube_build.build(cache_root=tmp_path, echo=lines.append) == bin_dir
    assert len(lines) == 1 and "up to date" in lines[0]


def test_changing_a_module_file_makes_its_component_stale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A new pin in go.mod (or go.sum, or main.go) changes the stamp, so the next build rebuilds that component."""
    modules = tmp_path / "go"
    shutil.copytree(kube_build.MODULES_DIR, modules)
    [etcd] = [c for c in kube_build.COMPONENTS if c.name == "etcd"]
    before = kube_build.stamp_key(etcd)
    monkeypatch.setattr(kube_build, "MODULES_DIR", modules)
    assert kube_build.stamp_key(etcd) == before
    go_mod = modules / "etcd" / "go.mod"
    go_mod.write_text(go_mod.read_text().replace("v3.5.21", "v3.5.22", 1))
    assert kube_build.stamp_key(etcd) != before
