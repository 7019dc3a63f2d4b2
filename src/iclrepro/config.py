"""Load, validate and resolve the workflow configuration.

A paper block in `config.yaml` holds the paper-scale values (each with its source) and a
`scales:` map of overrides; `resolve(config)` deep-merges the chosen scale's overrides
over the block. Validation runs on every scale of every paper, so a typo anywhere fails
at parse time with the dotted path of the key.
"""

from __future__ import annotations

import copy
import math
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import jsonschema
import yaml

from iclrepro.errors import IclreproError

SCALES = ("smoke", "quick", "paper")
SCHEMA_PATH = Path("workflow") / "schemas" / "config.schema.yaml"
NUMBER_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
INTEGER_TEXT = re.compile(r"[-+]?\d+")
BOOLEAN_TEXT = {"true": True, "false": False}
SETTING_KEY = re.compile(r"[a-zA-Z_][\w-]*\w")   # what Snakemake's --config accepts as a key


class ConfigError(IclreproError, ValueError):
    """The configuration is invalid; the message names the key."""


def deep_merge(base: dict, override: dict) -> dict:
    """Dicts merge key by key; any other value in `override` replaces the one in `base`."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_schema(workdir: str | Path = ".") -> dict:
    path = Path(workdir) / SCHEMA_PATH
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no config schema here; {workdir} is not a workflow directory "
                          "(run iclrepro in the workflow directory, or name its config.yaml first)") from None


def _dotted(path) -> str:
    return ".".join(str(part) for part in path) or "(top level)"


# YAML's .nan and .inf (and 1e400, read as text, then as a float) are no setting's value: they
# would pass the schema's bounds and fail later, when a spec is hashed, with no key named
def _is_finite_number(checker, instance) -> bool:
    return jsonschema.Draft202012Validator.TYPE_CHECKER.is_type(instance, "number") and math.isfinite(instance)


def _ascending(validator, wanted: bool, instance, schema):
    """Our keyword `ascending`: a [low, high] range (a reversed one would fail every claim it bounds)."""
    if wanted and validator.is_type(instance, "array") and len(instance) == 2 and instance[0] > instance[1]:
        yield jsonschema.ValidationError(f"{instance} should be [low, high], with low <= high")


ConfigValidator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator, validators={"ascending": _ascending},
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("number", _is_finite_number))


def _raise_first(schema: dict, instance, prefix: tuple, where: str = "") -> None:
    validator = ConfigValidator(schema)
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    if errors:
        error = jsonschema.exceptions.best_match(errors)
        path = _dotted(prefix + tuple(error.absolute_path))
        raise ConfigError(f"config {path}{where}: {error.message}{_expected_keys(error)}")


def _expected_keys(error: jsonschema.ValidationError) -> str:
    """Where a single value stands for a map of settings (cui2024's `lr: {full, reduced}`),
    the keys the map takes: the bare "is not of type 'object'" leaves the reader to find them."""
    keys = error.schema.get("properties") if (error.validator, error.validator_value) == ("type", "object") else None
    return f" (a map of {', '.join(keys)})" if keys else ""


def normalise_papers(papers):
    """Accept a list or a comma-separated string (as `--config papers=a,b` gives); anything
    else is left for the schema to name (`papers=` gives None)."""
    if isinstance(papers, str):
        papers = [name.strip() for name in papers.split(",") if name.strip()]
    return papers


def paper_schema(schema: dict, paper: str) -> dict:
    """A root schema for one paper block (its $refs resolve against the full schema)."""
    return {"$defs": schema["$defs"], "$ref": f"#/$defs/papers/{paper}"}


def merged_block(block: dict, scale: str) -> dict:
    base = {key: value for key, value in block.items() if key != "scales"}
    return deep_merge(base, (block.get("scales") or {}).get(scale) or {})


def _leaf_paths(settings: Mapping, prefix: tuple = ()) -> Iterator[tuple]:
    for key, value in settings.items():
        if isinstance(value, Mapping):
            yield from _leaf_paths(value, prefix + (key,))
        else:
            yield prefix + (key,)


def _sets(settings: Mapping, path: tuple) -> bool:
    for key in path:
        if not isinstance(settings, Mapping) or key not in settings:
            return False
        settings = settings[key]
    return True


def shadowed_settings(config_files: Sequence[Path], settings: Mapping, config: dict, workdir: Path) -> list[str]:
    """The paper settings that a run's own config files (those read over the workflow's
    config.yaml) or `--config` settings give outside `scales:`, but which the chosen scale's
    block sets too: the scale's value wins, so they change nothing (a silent trap). A source
    that sets the key in that scale's block as well has done what the warning would ask."""
    base = (Path(workdir) / "config.yaml").resolve()
    overlays = {str(path): read(path) for path in config_files if Path(path).resolve() != base}
    overlays["--config"] = settings
    scale, found = config.get("scale"), []
    for source, overlay in overlays.items():
        for paper, block in overlay.items():
            if not isinstance(block, Mapping) or not isinstance(config.get(paper), Mapping):
                continue
            scale_block = (config[paper].get("scales") or {}).get(scale) or {}
            own_scale_block = (block.get("scales") or {}).get(scale) or {}
            for path in _leaf_paths({key: value for key, value in block.items() if key != "scales"}):
                if _sets(scale_block, path) and not _sets(own_scale_block, path):
                    key = ".".join(map(str, path))
                    found.append(f"{paper}.{key} (from {source}) changes nothing at scale {scale}, whose "
                                 f"{paper}.scales.{scale}.{key} sets it: set that key instead")
    return found


def warn_of_shadowed_settings(config_files: Sequence[Path], settings: Mapping, config: dict, workdir: Path) -> None:
    """Print shadowed_settings as warnings (snakemake's planning and `iclrepro cells`)."""
    for message in shadowed_settings(config_files, settings, config, workdir):
        print(f"iclrepro: warning: config {message}", file=sys.stderr)


def validate(config: dict, schema: dict) -> None:
    """Check the whole config, every scale of every paper block included."""
    config = coerce(dict(config, papers=normalise_papers(config.get("papers", []))), schema, schema)
    _raise_first(schema, config, ())
    for paper in config["papers"]:
        if paper not in config:
            raise ConfigError(f"config papers: {paper!r} is selected but has no `{paper}:` block")
    for paper in schema["$defs"]["papers"]:
        block = config.get(paper)
        for scale in (block or {}).get("scales") or {}:
            merged = coerce(merged_block(block, scale), paper_schema(schema, paper), schema)
            _raise_first(paper_schema(schema, paper), merged, (paper,), f" (scale {scale})")


def _typed_text(text: str, kind):
    """The number or boolean that text spells where the schema wants one, else the text.
    Snakemake's `--config key={...}` reads every value nested in the braces as text, and
    PyYAML reads a number without a dot, like 1e-3, as text."""
    if kind in ("integer", "number") and NUMBER_TEXT.fullmatch(text):
        return int(text) if INTEGER_TEXT.fullmatch(text) else float(text)
    if kind == "boolean":
        return BOOLEAN_TEXT.get(text.lower(), text)
    return text


def coerce(value, schema: dict, root: dict):
    """Give numbers and booleans the type the schema declares: YAML's 1 and 1.0 must hash
    alike, and text that spells a number or a boolean (see _typed_text) is read as one."""
    while "$ref" in schema:
        rest = {key: item for key, item in schema.items() if key != "$ref"}
        schema = {**_follow(schema["$ref"], root), **rest}
    for part in schema.get("allOf", []):
        value = coerce(value, part, root)
    kind = schema.get("type")
    if isinstance(value, str):
        value = _typed_text(value, kind)
    if kind == "integer" and isinstance(value, float) and value.is_integer():
        return int(value)
    if kind == "number" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, dict):
        properties, extra = schema.get("properties", {}), schema.get("additionalProperties")
        return {key: coerce(item, properties.get(key, extra if isinstance(extra, dict) else {}), root)
                for key, item in value.items()}
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [coerce(item, schema["items"], root) for item in value]
    return value


def _follow(ref: str, root: dict) -> dict:
    node = root
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def resolve(config: dict, schema: dict) -> dict:
    """Config with each selected paper's block merged for the chosen scale, numbers typed."""
    resolved = {key: value for key, value in config.items() if not isinstance(value, dict)}
    resolved["papers"] = normalise_papers(config["papers"])
    for paper in resolved["papers"]:
        resolved[paper] = merged_block(config[paper], config["scale"])
    return coerce(resolved, schema, schema)


# Folders of the workflow itself: results there would mix with (and .gitignore) its own files
WORKFLOW_FOLDERS = ("src", "workflow", "tests", "profiles", "envs", ".ci", ".git", ".snakemake")


def check_results_dir(results: str) -> str:
    """The results directory must be a plain relative path (no traversal, no absolute path)
    to a folder of its own."""
    path = Path(results)
    if path.is_absolute() or ".." in path.parts or not re.fullmatch(r"[\w./-]+", results):
        raise ConfigError(f"config results: {results!r} must be a relative path without '..'")
    if not path.parts or path.parts[0] in WORKFLOW_FOLDERS:
        raise ConfigError(f"config results: {results!r} would put results among the workflow's own files; "
                          "name a folder of its own, such as results")
    return results


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML without repeated keys: PyYAML (and so Snakemake) keeps the last of two silently,
    so a block pasted at the end of config.yaml would replace the whole earlier one."""


def _map_of_unique_keys(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError("while reading a map", node.start_mark,
                                                    f"found the key {key!r} twice", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _map_of_unique_keys)


def read(config_paths: str | Path | Sequence[str | Path]) -> dict:
    """The raw config, unvalidated: one file, or several merged in order, a later file
    overriding an earlier one as with Snakemake's `--configfile A B`."""
    paths = [config_paths] if isinstance(config_paths, (str, Path)) else config_paths
    merged = {}
    for path in map(Path, paths):
        try:
            settings = yaml.load(path.read_text(), Loader=_UniqueKeyLoader) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML ({err})") from None
        if not isinstance(settings, dict):
            raise ConfigError(f"{path}: a config file holds a map of settings, not a {type(settings).__name__}")
        merged = deep_merge(merged, settings)
    return merged


def parse_settings(entries: Sequence[str]) -> dict:
    """Command-line `KEY=VALUE` settings, read as Snakemake's `--config` reads them, so that
    `iclrepro` and `snakemake` given the same words plan the same cells.

    (Snakemake's own parser is not imported for this: importing `snakemake.cli` takes seconds.)
    """
    settings = {}
    for entry in entries:
        key, equals, text = entry.partition("=")
        if not equals or not SETTING_KEY.fullmatch(key):
            raise ConfigError(f"--config {entry!r}: a setting is KEY=VALUE, with KEY a name such as scale")
        settings = deep_merge(settings, {key: _setting_value(text.strip("'\""))})
    return settings


def _setting_value(text: str):
    """An int, a float, True or False, else YAML with every scalar kept as text (`coerce` types
    those by the schema), else the text itself; nothing for an empty value."""
    if text == "":
        return None
    for parse in (int, float, {"True": True, "False": False}.__getitem__):
        try:
            return parse(text)
        except (ValueError, KeyError):
            pass
    try:
        return yaml.load(text, Loader=yaml.BaseLoader)
    except yaml.YAMLError:
        return text


def load(config_paths: str | Path | Sequence[str | Path] = "config.yaml", overrides: dict | None = None,
         workdir: str | Path = ".") -> dict:
    """Read, override, validate and resolve the config file or files (what the CLI's planner uses)."""
    return check_and_resolve(deep_merge(read(config_paths), overrides or {}), load_schema(workdir))


def check_and_resolve(config: dict, schema: dict) -> dict:
    """Validate a raw config (as Snakemake holds it) and resolve it for its scale."""
    validate(config, schema)
    check_results_dir(config["results"])
    return resolve(config, schema)
