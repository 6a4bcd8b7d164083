"""Does a benchmark run reproduce an earlier one? Each detector's VOC07 mAP against the earlier
run's ``results.json``, within a tolerance, with the config keys that differ between the two
(``tools/benchmark.py --reference``; its ``--help`` says what to expect between runs)."""

from __future__ import annotations

import json
from pathlib import Path

from detect.config import Config, config_to_dict
from detect.errors import ConfigError

#: Config keys that only say where things are written; a reference run may differ in them.
LOCATION_KEYS = ("train.output_dir", "model.rcnn.feature_cache_dir", "model.proposals.cache_dir", "data.builtin_root")


def load_reference(path: Path, dataset: str, quick: bool) -> dict:
    """An earlier run's ``results.json`` (``--reference``) on the same ``dataset`` and schedule, read
    before any training starts."""
    hint = "give the results.json that an earlier tools/benchmark.py run wrote in its --out folder"
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: reference results not found; {hint}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"{path}: not valid JSON ({error}); {hint}") from None
    try:
        rows = [{**row, "detector": str(row["detector"]), "voc07_map": float(row["voc07_map"])}
                for row in results["rows"]]
        info = results.get("machine")
        results = {**results, "rows": rows, "machine": info if isinstance(info, dict) else {}}
    except (KeyError, TypeError, ValueError, AttributeError):
        raise ConfigError(f"{path}: not a benchmark results.json (no 'rows' list of rows with 'detector' and a "
                          f"numeric 'voc07_map'); {hint}") from None
    earlier = (results.get("dataset", dataset), bool(results.get("quick", quick)))
    if earlier != (dataset, quick):
        raise ConfigError(f"{path}: reference is a {'--quick ' if earlier[1] else ''}run on '{earlier[0]}', this is a "
                          f"{'--quick ' if quick else ''}run on '{dataset}'; give a results.json of the same dataset "
                          "and schedule")
    return results


def reference_summary(path: Path, reference: dict) -> dict:
    """Where the reference run came from, as its results table names it."""
    info = reference["machine"]
    return {"path": str(path), "git": info.get("git", "unknown"), "date": reference.get("date", "date not recorded"),
            "cpu": info.get("cpu", "unknown CPU"), "cpu_bfloat16": info.get("cpu_bfloat16")}


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_changes(ours: dict, theirs: dict) -> list[str]:
    """``key: reference value → this run's`` for every config key (output folders aside) that differs.

    A key that the reference run's version did not have yet, and that this run leaves at its
    default, is not a difference: a new setting's default keeps the behaviour from before it.
    """
    ours, theirs = _flatten(ours), _flatten(theirs)
    defaults = _flatten(config_to_dict(Config()))
    absent = "(absent)"

    def differs(key: str) -> bool:
        if key in LOCATION_KEYS:
            return False
        if key not in theirs and key in defaults and ours.get(key, absent) == defaults[key]:
            return False
        return ours.get(key, absent) != theirs.get(key, absent)

    return [f"{key}: {theirs.get(key, absent)} → {ours.get(key, absent)}"
            for key in sorted(ours.keys() | theirs.keys()) if differs(key)]


def reproduction(rows: list[dict], reference: dict, tolerance: float) -> list[dict]:
    """Each detector's VOC07 mAP against the same detector's in ``reference`` (detectors in both runs),
    with the config keys (output folders aside) whose values differ between the two runs (``None``
    when the reference did not record its config)."""
    earlier = {row["detector"]: row for row in reference["rows"]}
    checks = []
    for row in rows:
        before = earlier.get(row["detector"])
        if before is None:
            continue
        changed = config_changes(row.get("config", {}), before["config"]) if "config" in before else None
        delta = row["voc07_map"] - before["voc07_map"]
        checks.append({"detector": row["detector"], "title": row["title"], "voc07_map": row["voc07_map"],
                       "reference_map": before["voc07_map"], "delta": delta,
                       # A hair of slack so that a difference of exactly the tolerance counts as within it.
                       "within": abs(delta) <= tolerance + 1e-9, "config_changes": changed})
    return checks


def reproduction_summary(checks: list[dict], reference: Path, tolerance: float) -> str:
    """One line: how many detectors reproduced the reference run, which did not, whose config differs."""
    if not checks:
        return f"reproduction against {reference}: no detector of this run is in it, nothing compared"
    missed = [c["title"] for c in checks if not c["within"]]
    changed = [c["title"] for c in checks if c["config_changes"]]
    return (f"reproduction against {reference}: {len(checks) - len(missed)} of {len(checks)} detectors within "
            f"±{tolerance:g}" + (f"; not: {', '.join(missed)}" if missed else "")
            + (f" (config differs: {', '.join(changed)})" if changed else ""))
