"""Policy documents: the YAML admins write (DESIGN 2.3), validated in layers.

1. YAML syntax (file and line);
2. the document's shape with pydantic (unknown keys, types, durations);
3. each ``match`` / ``exempt`` key through the condition registry;
4. the action against the providers of the targets the policy applies to.

Every error is a :class:`~janitor.errors.PolicyError` naming the file, the policy and the field.
A valid spec compiles into a frozen :class:`Policy` the engine evaluates.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from janitor.durations import Duration
from janitor.errors import PolicyError
from janitor.model import QUIET_STATES, Action, PolicyRef, State
from janitor.policy.conditions import (
    Condition,
    ConditionError,
    ProviderStateIn,
    StateIn,
    compile_condition,
)

NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
#: The longest grace: ten years keeps every ``warned_at + grace`` inside the calendar (a
#: longer one overflowed in the sweep's "act after" time); anything longer is a typo.
MAX_GRACE = timedelta(days=3650)
#: force_cancel escalates a cancel stuck in CANCELLING at least this long (the ESS rule).
FORCE_CANCEL_MIN_STUCK = timedelta(minutes=30)
_DURATION: TypeAdapter[timedelta | None] = TypeAdapter(Duration | None)


class PolicySpec(BaseModel):
    """One policy as written in YAML and stored (as JSON) in the database."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    enabled: bool = True
    priority: int = Field(default=100, ge=0, le=1_000_000)
    targets: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
    match: dict[str, Any] = Field(min_length=1)
    exempt: dict[str, Any] = Field(default_factory=dict)
    action: Action
    mode: Literal["dry-run", "enforce"] = "dry-run"
    grace: Duration | None = None
    min_observations: int = Field(default=1, ge=1, le=1000)
    max_actions_per_sweep: int | None = Field(default=None, ge=0)
    max_actions_percent: float | None = Field(default=None, gt=0, le=100)

    @field_validator("action", mode="before")
    @classmethod
    def _policy_action(cls, value: Any) -> Any:
        known = [a.value for a in Action if a.in_policies]
        if value not in known:
            raise ValueError(f"expected one of: {', '.join(known)}")
        return value

    @field_validator("action")
    @classmethod
    def _force_cancel_is_an_escalation(cls, value: Action, info: ValidationInfo) -> Action:
        """force_cancel only for requests stuck in CANCELLING for 30m or more (DESIGN 6)."""
        if value is not Action.FORCE_CANCEL:
            return value
        match = info.data.get("match") or {}
        named = match.get("provider_state")
        values = [named] if isinstance(named, str) else named
        if not isinstance(values, list) or [str(v).upper() for v in values] != ["CANCELLING"]:
            raise ValueError(
                "force_cancel needs match.provider_state: [CANCELLING] (and nothing else): "
                "it only escalates a cancel that is stuck"
            )
        try:
            stuck: timedelta | None = _DURATION.validate_python(match.get("in_state_for"))
        except ValidationError:
            stuck = None
        if stuck is None or stuck < FORCE_CANCEL_MIN_STUCK:
            raise ValueError("force_cancel needs match.in_state_for of at least 30m")
        return value

    @field_validator("grace")
    @classmethod
    def _positive_grace(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value <= timedelta(0):
            raise ValueError("must be a positive duration; leave grace out to act without warning")
        if value is not None and value > MAX_GRACE:
            raise ValueError("must be at most 3650d")
        return value

    def canonical(self) -> dict[str, Any]:
        """The stored form: JSON-compatible, defaults left out, stable for comparison."""
        return self.model_dump(mode="json", exclude_defaults=True)


class PolicyDocument(BaseModel):
    """A policy file: ``policies: [...]``."""

    model_config = ConfigDict(extra="forbid")

    policies: list[dict[str, Any]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """A compiled, enabled-or-not policy at one version: what the engine evaluates."""

    name: str
    version: int
    priority: int
    enabled: bool
    targets: tuple[str, ...]
    match: tuple[Condition, ...]
    exempt: tuple[Condition, ...]
    explicit_states: frozenset[State]
    explicit_provider_states: frozenset[str]  # lower-cased
    action: Action
    dry_run: bool
    grace: timedelta | None
    min_observations: int
    max_actions_per_sweep: int | None
    max_actions_percent: float | None
    spec: PolicySpec

    @property
    def ref(self) -> PolicyRef:
        """Name and version, as recorded in decisions and audit rows."""
        return PolicyRef(name=self.name, version=self.version)

    def applies_to(self, target: str) -> bool:
        """True when one of the policy's target globs matches ``target``."""
        return any(fnmatch.fnmatchcase(target, pattern) for pattern in self.targets)


def compile_policy(spec: PolicySpec, version: int, *, where: str = "") -> Policy:
    """Compile a validated spec; raise PolicyError naming the field on a bad condition."""
    match = _compile_block(spec, "match", spec.match, where)
    exempt = _compile_block(spec, "exempt", spec.exempt, where)
    explicit: frozenset[State] = frozenset()
    provider_states: frozenset[str] = frozenset()
    for item in match:
        if isinstance(item, StateIn):
            explicit = item.states
        if isinstance(item, ProviderStateIn):
            provider_states = item.values
    return Policy(
        name=spec.name,
        version=version,
        priority=spec.priority,
        enabled=spec.enabled,
        targets=tuple(spec.targets),
        match=match,
        exempt=exempt,
        explicit_states=explicit,
        explicit_provider_states=provider_states,
        action=spec.action,
        dry_run=spec.mode != "enforce",
        grace=spec.grace,
        min_observations=spec.min_observations,
        max_actions_per_sweep=spec.max_actions_per_sweep,
        max_actions_percent=spec.max_actions_percent,
        spec=spec,
    )


def _compile_block(
    spec: PolicySpec, block: str, items: Mapping[str, Any], where: str
) -> tuple[Condition, ...]:
    compiled = []
    for key, value in items.items():
        try:
            compiled.append(compile_condition(key, value))
        except ConditionError as exc:
            raise PolicyError(_located(where, spec.name, f"{block}.{key}", str(exc))) from None
    return tuple(compiled)


def _located(where: str, policy: str | None, field: str, message: str) -> str:
    prefix = f"{where}: " if where else ""
    name = f"policy {policy}: " if policy else ""
    return f"{prefix}{name}{field}: {message}"


def parse_specs(data: Any, *, where: str) -> list[PolicySpec]:
    """Validate a loaded document into specs (shape, then conditions), names unique."""
    if data is None:
        raise PolicyError(
            f"{where}: the file is empty: expected a document like 'policies: [...]' "
            "(see docs/policies.md)"
        )
    if not isinstance(data, dict):
        raise PolicyError(
            f"{where}: expected a mapping with a 'policies' list at the top, got a YAML "
            f"{_yaml_kind(data)}"
        )
    try:
        document = PolicyDocument.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(_pydantic_message(where, None, exc)) from None
    specs: list[PolicySpec] = []
    seen: set[str] = set()
    for index, raw in enumerate(document.policies):
        label = raw.get("name") if isinstance(raw, dict) else None
        try:
            spec = PolicySpec.model_validate(raw)
        except ValidationError as exc:
            raise PolicyError(
                _pydantic_message(where, str(label) if label else f"#{index + 1}", exc)
            ) from None
        compile_policy(spec, version=0, where=where)
        if spec.name in seen:
            raise PolicyError(_located(where, spec.name, "name", "used twice in the document"))
        seen.add(spec.name)
        specs.append(spec)
    return specs


def _pydantic_message(where: str, policy: str | None, exc: ValidationError) -> str:
    lines = []
    for error in exc.errors(include_url=False, include_input=False):
        field = ".".join(str(part) for part in error["loc"]) or "(document)"
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key" + _unknown_key_hint(str(error["loc"][-1]), policy is None)
        lines.append(_located(where, policy, field, message))
    return "\n".join(lines)


def _unknown_key_hint(key: str, document: bool) -> str:
    """Where an unknown key probably belongs: under ``match``, or a close known key."""
    from janitor.policy.conditions import CONDITIONS

    if not document and key in CONDITIONS:
        return f": {key} is a condition: it belongs under match (or exempt)"
    known = list(PolicyDocument.model_fields if document else PolicySpec.model_fields)
    close = difflib.get_close_matches(key, known + ([] if document else list(CONDITIONS)), n=1)
    if not close:
        return f" (known keys: {', '.join(known)})"
    where = " under match" if not document and close[0] in CONDITIONS else ""
    return f" (did you mean {close[0]!r}{where}?)"


def _yaml_kind(data: Any) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}.get(
        type(data), type(data).__name__
    )


def load_policy_files(path: Path) -> list[PolicySpec]:
    """Load a YAML file, or every ``*.yaml``/``*.yml`` file of a directory (sorted by name)."""
    if path.is_dir():
        files = sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
        if not files:
            raise PolicyError(f"{path}: no *.yaml or *.yml files in this directory")
    elif path.exists():
        files = [path]
    else:
        raise PolicyError(f"{path}: no such file or directory")
    specs: list[PolicySpec] = []
    origin: dict[str, Path] = {}
    for file in files:
        for spec in parse_specs(_read_yaml(file), where=str(file)):
            if spec.name in origin:
                raise PolicyError(
                    f"{file}: policy {spec.name}: name: also defined in {origin[spec.name]}"
                )
            origin[spec.name] = file
            specs.append(spec)
    return specs


def _read_yaml(file: Path) -> Any:
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"{file}: cannot be read: {exc.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        shown = ""
        if mark is not None and 0 <= mark.line < len(text.splitlines()):
            shown = f"\n    {text.splitlines()[mark.line].rstrip()}\n    {' ' * mark.column}^"
        raise PolicyError(f"{file}: invalid YAML{line}: {_plain(problem)}{shown}") from None


#: What PyYAML's messages usually mean in a policy file.
_YAML_HINTS: tuple[tuple[str, str], ...] = (
    (
        "mapping values are not allowed",
        (
            "a ':' where YAML expected none: check this line's indentation (the keys of one "
            "mapping start in the same column), or quote a value that contains ': '"
        ),
    ),
    (
        "expected <block end>",
        (
            "this line is indented differently from the lines before it: the items of one "
            "list or mapping must start in the same column"
        ),
    ),
    (
        "did not find expected key",
        (
            "this line is indented differently from the lines before it: the keys of one "
            "mapping must start in the same column"
        ),
    ),
    (
        "did not find expected '-' indicator",
        "a list item out of line: every '- ' of one list starts in the same column",
    ),
    (
        "could not find expected ':'",
        "a key without ':', or a value that continues on the next line without being indented",
    ),
    ("cannot start any token", "a tab or a stray character: YAML indents with spaces only"),
)


def _plain(problem: str) -> str:
    for marker, meaning in _YAML_HINTS:
        if marker in problem:
            return f"{meaning} (YAML: {problem})"
    return problem


def check_actions(
    specs: Iterable[PolicySpec],
    target_providers: Mapping[str, str],
    provider_actions: Mapping[str, frozenset[Action]],
    *,
    where: str,
    state_tables: Mapping[str, Mapping[str, State]] | None = None,
) -> list[str]:
    """Check each policy's action against the providers of the targets it applies to.

    Returns warnings (a policy that applies to no configured target; a ``provider_state``
    that names states janitor otherwise never touches, such as busy ones); raises
    PolicyError when a provider cannot perform the action.
    """
    warnings = []
    for spec in specs:
        warnings += _consent_warnings(spec, target_providers, state_tables or {}, where)
        matched = [
            name
            for name in target_providers
            if any(fnmatch.fnmatchcase(name, pattern) for pattern in spec.targets)
        ]
        if target_providers and not matched:
            warnings.append(
                f"{where}: policy {spec.name}: targets {spec.targets} match no configured "
                f"target, so it would act on nothing{_did_you_mean(spec.targets, target_providers)}"
            )
        for target in matched:
            provider = target_providers[target]
            actions = provider_actions[provider]
            if spec.action not in actions:
                can = ", ".join(sorted(actions))
                raise PolicyError(
                    _located(
                        where,
                        spec.name,
                        "action",
                        f"provider {provider} of target {target} cannot {spec.action} "
                        f"(it can: {can}); narrow 'targets' or choose another action",
                    )
                )
    return warnings


def _did_you_mean(patterns: Iterable[str], names: Iterable[str]) -> str:
    """`` (did you mean 'notebooks'?)`` for the configured names closest to the patterns."""
    known = list(names)
    close = sorted(
        {m for p in patterns for m in difflib.get_close_matches(p, known, n=2, cutoff=0.6)}
    )
    if not close:
        return f" (configured targets: {', '.join(sorted(known))})"
    return " (did you mean " + " or ".join(repr(c) for c in close) + "?)"


def _consent_warnings(
    spec: PolicySpec,
    target_providers: Mapping[str, str],
    state_tables: Mapping[str, Mapping[str, State]],
    where: str,
) -> list[str]:
    """Warn when ``match.provider_state`` consents to states that are not quiet (DESIGN 6)."""
    named = spec.match.get("provider_state")
    if named is None:
        return []
    values = {str(v).lower() for v in ([named] if isinstance(named, str) else named)}
    providers = {
        target_providers[t]
        for t in target_providers
        if any(fnmatch.fnmatchcase(t, pattern) for pattern in spec.targets)
    }
    loud: set[str] = set()
    for provider in providers:
        for provider_state, state in state_tables.get(provider, {}).items():
            if provider_state.lower() in values and state not in QUIET_STATES:
                loud.add(str(state))
    if not loud:
        return []
    states = ", ".join(sorted(loud))
    return [
        _located(
            where,
            spec.name,
            "match.provider_state",
            f"names provider states that janitor counts as {states}: this policy acts on "
            f"{states} sessions",
        )
    ]


def dump_document(specs: Iterable[PolicySpec]) -> str:
    """The YAML of a policy document, as ``policy export`` prints it."""
    body = {"policies": [spec.canonical() for spec in specs]}
    return yaml.safe_dump(body, sort_keys=False, allow_unicode=True)
