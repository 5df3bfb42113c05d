"""torchvision weights enums: their checkpoint in torch's hub cache, found and checked without torch.

`weights: torchvision:ResNet50_Weights.IMAGENET1K_V2` names a file torchvision downloads into
`$TORCH_HOME/hub/checkpoints/` (TORCH_HOME defaults to `$XDG_CACHE_HOME/torch`, that to
`~/.cache/torch`: torch.hub's own rule). Nothing is downloaded here: the file must be in the cache,
and its sha256 must start with the prefix in its name (`resnet50-11ad3fa6.pth`), the check
torchvision makes on download. The check is memoised by the file's size and mtime
(`file_digest`), so a poll costs one `stat`.

What an enum stands for (its URL, the builders that take it, its evaluation transforms) and what
timm's registry says of a model are library facts the daemon may not import torch to learn
(DESIGN.md §4). `model_facts` asks a child process (`python -m monitor.models._probe`), one for
all the names it does not know yet, and memoises each answer in `state_dir/cache/model-facts.json`
per name and installed library version: a poll never starts a process.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from ..errors import SourceError
from ..settings import ModelSpec
from ._digest import file_digest
from ._memo import DigestMemo

__all__ = [
    "Facts",
    "Library",
    "check_checkpoint",
    "enum_problem",
    "hub_checkpoint_dir",
    "model_facts",
    "torchvision_checkpoint",
]

Library = Literal["torchvision", "timm"]
Facts = dict[str, Any]

_EXTRA = {"torchvision": None, "timm": "timm"}  # torchvision is a core dependency
# torch.hub.HASH_REGEX: the sha256 prefix torch checks a downloaded checkpoint against.
_HASH_PREFIX = re.compile(r"-([a-f0-9]*)\.")
# A cold start imports torch, torchvision and timm (seconds); a stuck process must not stall a poll.
_PROBE_TIMEOUT = 300.0
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # the folder `monitor` is imported from


def torchvision_checkpoint(spec: ModelSpec, *, state_dir: Path) -> Path:
    """The hub-cache file of the model's torchvision weights enum, checked as torchvision checks it.

    SourceError (saying what to do) for an unknown enum, an enum of another builder, a file that
    is not there (this machine downloads nothing) and a file whose content does not match its name.
    """
    assert spec.weights is not None and spec.weights_kind == "torchvision"
    enum = spec.weights.split(":", 1)[1]
    facts = model_facts({"torchvision": [enum]}, state_dir=state_dir)["torchvision"][enum]
    problem = enum_problem(facts, spec)
    if problem is not None:
        raise SourceError(f"model {spec.name}: {problem}")
    path = hub_checkpoint_dir() / str(facts["file"])
    if not path.is_file():
        raise SourceError(_absent(spec, enum, facts, path))
    check_checkpoint(path, DigestMemo(Path(state_dir)), what=f"{spec.weights} of model {spec.name}")
    return path


def enum_problem(facts: Facts, spec: ModelSpec) -> str | None:
    """Why these enum facts do not fit the model (unknown enum, another builder's weights), or None."""
    if "error" in facts:
        return str(facts["error"])
    builder = spec.architecture.split(":", 1)[1]
    builders = [str(b) for b in facts.get("builders") or []]
    if builders and builder not in builders:
        return (
            f"weights {spec.weights} are for torchvision:{' / torchvision:'.join(builders)}, not "
            f"{spec.architecture}; change the architecture or the weights"
        )
    return None


def hub_checkpoint_dir() -> Path:
    """`torch.hub.get_dir()/checkpoints`, computed as torch does (TORCH_HOME, XDG_CACHE_HOME)."""
    home = os.getenv("TORCH_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch"))
    return Path(os.path.expanduser(home)) / "hub" / "checkpoints"


def check_checkpoint(path: Path, memo: DigestMemo, *, what: str) -> None:
    """SourceError unless the file's sha256 starts with the hex prefix in its name (if it has one)."""
    found = _HASH_PREFIX.search(path.name)
    if found is None:
        return  # torch checks nothing either for a name without a hash
    try:
        digest = file_digest(path, memo)
    except OSError as exc:
        raise SourceError(f"cannot read {path} ({what}): {exc.strerror or exc}") from None
    if not digest.startswith(found[1]):
        raise SourceError(
            f"{path} ({what}) is damaged or not the file torchvision publishes: its sha256 starts "
            f"{digest[: max(len(found[1]), 8)]}, its name says {found[1]}; delete it and copy it again "
            "from a machine where torchvision downloaded it"
        )


def _absent(spec: ModelSpec, enum: str, facts: Facts, path: Path) -> str:
    return (
        f"model {spec.name}: the checkpoint of {spec.weights} is not in torch's hub cache: no file {path} "
        f"(this machine downloads nothing). On a machine with internet access run\n"
        f"    python -c \"import torchvision; torchvision.models.get_weight('{enum}')"
        f'.get_state_dict(progress=True, check_hash=True)"\n'
        f"then copy ~/.cache/torch/hub/checkpoints/{facts['file']} to {path} (or download {facts['url']} "
        f"there); the folder is $TORCH_HOME/hub/checkpoints, TORCH_HOME defaulting to "
        f"$XDG_CACHE_HOME/torch, else ~/.cache/torch"
    )


# -- library facts, from a child process ---------------------------------------------------------


def model_facts(
    request: Mapping[Library, Sequence[str]], *, state_dir: Path
) -> dict[Library, dict[str, Facts]]:
    """What each library says of each name (see `monitor.models._probe`), memoised per library version.

    One child process answers every name not memoised yet; an unknown name is a fact too
    (`{"error": …}`), memoised like the others until the library is upgraded.
    """
    memo = DigestMemo(Path(state_dir), name="model-facts.json", local_keys=False)
    found: dict[Library, dict[str, Facts]] = {}
    missing: dict[Library, list[str]] = {}
    for library, names in request.items():
        version = f"{library}=={_installed(library)}"
        found[library] = {}
        for name in dict.fromkeys(names):
            cached = memo.get(f"{library}:{name}", version)
            if cached is not None:
                found[library][name] = json.loads(cached)
            else:
                missing.setdefault(library, []).append(name)
    if missing:
        answer = _run_probe(missing)
        for library, names in missing.items():
            version = f"{library}=={_installed(library)}"
            for name in names:
                facts = answer.get(library, {}).get(name)
                if not isinstance(facts, dict):
                    raise SourceError(f"the model probe gave no answer for {library} {name}")
                memo.put(f"{library}:{name}", version, json.dumps(facts, sort_keys=True))
                found[library][name] = facts
    return found


def _installed(library: Library) -> str:
    try:
        return metadata.version(library)
    except metadata.PackageNotFoundError:
        extra = _EXTRA[library]
        how = f"pip install 'persistence-monitor[{extra}]'" if extra else "reinstall persistence-monitor"
        raise SourceError(f"{library} is not installed here: {how}") from None


def _run_probe(request: Mapping[Library, Sequence[str]]) -> dict[str, dict[str, Facts]]:
    """Run `python -m monitor.models._probe` (it imports the libraries; this process must not)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
    env["HF_HUB_OFFLINE"] = "1"  # timm's registry is read, never a hub: belt and braces
    what = ", ".join(f"{lib} {', '.join(names)}" for lib, names in request.items())
    command = [sys.executable, "-m", "monitor.models._probe", json.dumps(dict(request))]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=_PROBE_TIMEOUT, env=env, check=False
        )
    except subprocess.TimeoutExpired:
        raise SourceError(
            f"asking {what} took over {_PROBE_TIMEOUT:g}s (python -m monitor.models._probe)"
        ) from None
    except OSError as exc:
        raise SourceError(f"cannot start {sys.executable} to ask {what}: {exc.strerror or exc}") from None
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    if done.returncode != 0 or not lines:
        tail = [line for line in done.stderr.splitlines() if line.strip()][-1:] or ["no output"]
        raise SourceError(
            f"asking {what} failed (python -m monitor.models._probe exited {done.returncode}: {tail[0][:300]})"
        )
    try:
        answer = json.loads(lines[-1])
    except ValueError:
        raise SourceError(f"asking {what}: the probe printed no JSON ({lines[-1][:200]!r})") from None
    if not isinstance(answer, dict):
        raise SourceError(f"asking {what}: the probe's answer is not a JSON object")
    return answer
