"""Images are tagged by what went into them (compose/build-images --print-tag): two checkouts whose sources
differ get different tags, so neither overwrites the other's images on a shared engine; the same sources
get the same tag. Builds nothing: the tag is computed from the sources, the dependencies, the Dockerfile
and the base image's id (or its name, where Docker or the base image is absent)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ["pyproject.toml", "README.md", "caslab", "mockcas", "loadgen", "lab", "compose"]


def checkout_copy(at: Path) -> Path:
    """The sources build-images hashes, copied as another checkout would hold them."""
    at.mkdir()
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, at / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, at / name)
    return at


def tag_of(checkout: Path) -> str:
    done = subprocess.run(
        [str(checkout / "compose" / "build-images"), "--print-tag"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    tag = done.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{16}", tag), tag
    return tag


def test_checkouts_with_other_sources_get_other_image_tags_and_the_same_sources_the_same(tmp_path):
    same = checkout_copy(tmp_path / "same")
    changed = checkout_copy(tmp_path / "changed")
    cas = changed / "mockcas" / "cas.py"
    cas.write_text(cas.read_text() + "\n# a change of the sources\n")

    assert tag_of(same) == tag_of(ROOT)
    assert tag_of(changed) != tag_of(ROOT)
    assert not (same / ".caslab").exists()  # --print-tag builds nothing


def test_the_compose_lab_takes_the_tag_from_the_environment():
    lab = (ROOT / "compose" / "lab.yml").read_text()  # docker-compose.yml extends its services
    images = re.findall(r"image: (\S+)", lab)
    assert images and all(image.endswith(":${CASLAB_IMAGE_TAG:-latest}") for image in images), images
