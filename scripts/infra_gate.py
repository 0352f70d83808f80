#!/usr/bin/env python3
"""The infrastructure gate: what can be checked about tagfence's Bicep without Azure.

No Bicep compiler runs offline (it is a .NET download), so this gate does what can be done here:

1. syntax: every `infra/**/*.bicep` parses with tree-sitter-bicep (no ERROR or MISSING node);
2. wiring: with checkov's own Bicep parser (pycep), every module path exists, every parameter
   passed to a module is declared there, every module parameter without a default is passed, every
   `<module>.outputs.<name>` exists, and `infra/main.parameters.json` names only declared
   parameters and gives every required one — the mistakes a compiler would have caught;
3. policy: checkov (`--framework bicep`, with the project's checks in `infra/checkov/`) finds
   0 parsing errors (checkov skips files it cannot parse and still exits 0, so the count is read
   from its JSON) and no failed check that `infra/checkov/skips.toml` does not skip with a reason;
   every skip entry must still match a failure, every project check must have run, and no
   `checkov:skip` comment may hide in a .bicep file;
4. functions: no HTTP trigger in `function-*/function.json` is anonymous (an explicit `authLevel`
   other than `anonymous` is required), except the just-in-time grant route (`function-grant`,
   `ANONYMOUS_HTTP_FUNCTIONS`), whose callers App Service authentication authenticates: it may be
   anonymous only on a `grant` route and only while the grant authentication of stage 8 is wired;
5. parameters: those a deployment must be given (`REQUIRED_PARAMETERS`: the environment, the
   location, the vaults) have no default at all (azd asks for a parameter only when it has neither
   a default nor a value in main.parameters.json; a default of '' would silently deploy an app with
   nothing to do), a `@minLength` of at least 1 (azd's prompt then refuses an empty answer), a
   `@description` (the prompt's help), and in main.parameters.json exactly `${VARIABLE}`, with no
   `=fallback`; any other parameter with a `@minLength` has neither an empty default nor an empty
   value in main.parameters.json when its variable is unset;
6. hooks: the scripts `azure.yaml` runs exist; the shell hooks in `infra/hooks/` are executable
   and pass `bash -n`, the Python ones compile; `azure.yaml` runs infra/hooks/preprovision.py as
   its `preprovision` hook on POSIX and on Windows, interactively (the hook asks for the vaults
   when none are set) and, under pwsh, passing the script's exit code on;
7. preprovision: that hook, run with no terminal and a stand-in `azd` on PATH, refuses an empty
   selection, each malformed resource id (of any of the three kinds, in TAGFENCE_VAULTS or
   TAGFENCE_RESOURCES), an id of a kind TAGFENCE_KINDS leaves out, an unknown kind or a malformed
   discovery scope (naming the setting and the expected shape), and accepts well-formed ones,
   setting TAGFENCE_VAULTS to none when only TAGFENCE_RESOURCES or discovery selects
   (`PREPROVISION_CASES`); on a pseudo-terminal it asks again after a bad answer and stores a good
   one with `azd env set` (`PROMPT_ANSWERS`); and the postdeploy hook, run with a stand-in `az`,
   filters the Event Grid subscription on the write operations of the kinds TAGFENCE_KINDS names
   (every kind when it names none) and refuses an unknown kind (`POSTDEPLOY_CASES`);
8. grants: `infra/app/auth.bicep` configures App Service authentication (`authsettingsV2`) with
   the Microsoft Entra ID provider, a client id, an issuer and an `api://` audience, without
   requiring authentication of every request (`requireAuthentication: false`,
   `unauthenticatedClientAction: AllowAnonymous`: the function-key sync and the Event Grid webhook
   carry no Entra token), and `infra/main.bicep` deploys it only when `grantAuthClientId` is set;
9. kinds: least privilege per kind. With a small evaluator of Bicep expressions
   (scripts/infra_bicep_eval.py, on tree-sitter-bicep's tree), the custom roles' actions are
   evaluated for several values of `enabledKinds` (`ENABLED_KINDS_CASES`: each kind alone, spaced
   and mixed-case spellings, empty): no role may hold a kind's read or write unless enabledKinds
   names the kind, and the firewall role must hold those of every kind named, and Service Tags
   read. Each kind's module (`KINDS`: rbac/vault.bicep, rbac/storage-account.bicep,
   rbac/registry.bicep) must target a resource group and scope its role assignment to the
   `existing` resource of its type; its loop in main.bicep, evaluated for ids of every kind in
   both `vaults` and `listedResources` (`LISTED_CASES`), must deploy it once per listed id of its
   kind, into `resourceGroup(<subscription>, <group>)` of the id, with the id's name.

`--self-test` copies the infra (and the function folders and azure.yaml) to a temporary directory,
checks that the gate passes there, then breaks the copy one way at a time — a syntax error, a role
assignment without principalType, shared key access, an anonymous HTTP trigger (also one in
`function-grant` on another route), App Service authentication that requires every request or is
deployed without a client id, an empty default
for the vaults, the preprovision hook unwired or accepting any subscription, the firewall role
granting a kind's actions that enabledKinds leaves out, a kind's module assigning at subscription
scope or on the whole resource group, the ids of listedResources getting no role, and more — and
checks that the gate fails each time for the expected reason.

Runs with the Python of `.venv-infra/` (scripts/infra_gate.sh creates it): it needs checkov 3.3.30
(which brings pycep-parser 0.5.1), tree-sitter 0.26.1 and tree-sitter-bicep 1.1.0.

Usage: scripts/infra_gate.py [--root DIR] [--self-test] [--checkov PATH] [--verbose]
Exit status: 0 pass, 1 fail, 2 usage or environment error.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra_bicep_eval import BicepEvalError, Evaluator, Scope, Template

ROOT = Path(__file__).resolve().parent.parent
PROJECT_CHECK_PREFIX = "CKV_TAGFENCE_"

# Parameters of infra/main.bicep that a deployment must be given, with the azd environment variable
# main.parameters.json takes each from. `vaults` has no sensible default: an app deployed without
# vaults starts, logs `vaults=0` and fails only at its first timer run (issue 13, item 8).
REQUIRED_PARAMETERS = {
    "environmentName": "AZURE_ENV_NAME",
    "location": "AZURE_LOCATION",
    "vaults": "TAGFENCE_VAULTS",
}
PREPROVISION_HOOK = "infra/hooks/preprovision.py"

# Just-in-time grants over HTTP (docs/grants.md). The grant route's callers are authenticated by App
# Service authentication (Microsoft Entra ID) in front of the handler, not by a function key: its
# trigger may be anonymous, on routes starting with `grant` only, and only while the module below
# is wired. Every other HTTP trigger must still carry a key.
ANONYMOUS_HTTP_FUNCTIONS = {"function-grant": "grant"}
GRANT_AUTH_MODULE = "infra/app/auth.bicep"
GRANT_AUTH_PARAMETER = "grantAuthClientId"


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass
class Report:
    """What one gate run found. `failures` decide the outcome; `notes` are for people."""

    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def fail(self, stage: str, message: str) -> None:
        self.failures.append(f"[{stage}] {message}")

    def note(self, stage: str, message: str) -> None:
        self.notes.append(f"[{stage}] {message}")

    @property
    def passed(self) -> bool:
        return not self.failures


def rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def bicep_files(root: Path) -> list[Path]:
    return sorted((root / "infra").rglob("*.bicep"))


# --------------------------------------------------------------------------------------------
# 1. Syntax (tree-sitter-bicep)
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def tree_sitter_parser() -> Any:
    try:
        import tree_sitter
        import tree_sitter_bicep
    except ImportError as error:
        raise SystemExit(f"infra_gate: {error}; run scripts/infra_gate.sh, which installs tree-sitter-bicep") from error
    return tree_sitter.Parser(tree_sitter.Language(tree_sitter_bicep.language()))


def check_syntax(root: Path, report: Report) -> None:
    parser = tree_sitter_parser()
    for path in bicep_files(root):
        source = path.read_bytes()
        tree = parser.parse(source)
        problems: list[str] = []
        stack = [tree.root_node]
        while stack:
            node = stack.pop()
            if node.is_error or node.is_missing:
                row, column = node.start_point
                line = source.splitlines()[row].decode("utf-8", "replace").strip() if row < len(source.splitlines()) else ""
                kind = f"missing {node.type!r}" if node.is_missing else "unexpected text"
                problems.append(f"{rel(path, root)}:{row + 1}:{column + 1}: syntax error ({kind}): {line[:100]}")
                if len(problems) >= 5:
                    break
                continue
            stack.extend(reversed(node.children))
        for problem in problems:
            report.fail("syntax", problem)
    report.note("syntax", f"{len(bicep_files(root))} .bicep files parsed with tree-sitter-bicep")


# --------------------------------------------------------------------------------------------
# 2. Wiring (pycep): modules, their parameters and outputs, main.parameters.json
# --------------------------------------------------------------------------------------------


def unwrap(config: Any) -> dict[str, Any]:
    """pycep nests a loop's or condition's body under config.config."""
    while isinstance(config, dict) and "config" in config and ("condition" in config or "loop_type" in config):
        config = config["config"]
    return config if isinstance(config, dict) else {}


def module_output_references(node: Any, modules: set[str]) -> list[tuple[str, str]]:
    """Every `<module>.outputs.<name>` in a pycep tree, as (module, name)."""
    found: list[tuple[str, str]] = []
    if isinstance(node, dict):
        operator = node.get("operator")
        if isinstance(operator, dict) and operator.get("type") == "property_accessor":
            operands = operator.get("operands") or {}
            first, second = operands.get("operand_1"), operands.get("operand_2")
            if first in modules and isinstance(second, dict):
                inner = (second.get("operator") or {}).get("operands") or {}
                if inner.get("operand_1") == "outputs" and isinstance(inner.get("operand_2"), str):
                    found.append((first, inner["operand_2"]))
        for value in node.values():
            found.extend(module_output_references(value, modules))
    elif isinstance(node, list):
        for value in node:
            found.extend(module_output_references(value, modules))
    return found


@functools.lru_cache(maxsize=None)
def pycep_parser() -> Any:
    try:
        from pycep import BicepParser
    except ImportError as error:
        raise SystemExit(f"infra_gate: {error}; run scripts/infra_gate.sh, which installs checkov (and pycep)") from error
    return BicepParser(add_line_numbers=True)


@functools.lru_cache(maxsize=None)
def pycep_parse(text: str) -> dict[str, Any]:
    """pycep's reading of a template (cached: the self-test's copies are mostly identical).
    Callers must not change the result."""
    return pycep_parser().parse(text=text)


def check_wiring(root: Path, report: Report) -> None:
    parsed: dict[Path, dict[str, Any]] = {}
    for path in bicep_files(root):
        try:
            parsed[path] = pycep_parse(path.read_text(encoding="utf-8"))
        except Exception as error:  # pycep raises lark errors of several kinds
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            report.fail("parse", f"{rel(path, root)}: checkov's Bicep parser (pycep 0.5.1) cannot read it: {first_line}")
    def target_of(path: Path, module: dict[str, Any]) -> Path:
        return (path.parent / (module.get("detail") or {}).get("path", "")).resolve()

    for path, template in parsed.items():
        modules = template.get("modules") or {}
        for symbol, module in modules.items():
            where = f"{rel(path, root)}: module {symbol} ({(module.get('detail') or {}).get('path')})"
            if module.get("type") != "local":
                report.fail("wiring", f"{where}: not a local file; offline checks cannot see into registry modules")
                continue
            target = target_of(path, module)
            if target not in parsed:
                if not target.exists():
                    report.fail("wiring", f"{where}: no such file")
                continue
            declared = parsed[target].get("parameters") or {}
            passed = unwrap(module.get("config")).get("params") or {}
            for name in passed:
                if name not in declared:
                    report.fail("wiring", f"{where}: passes parameter {name!r}, which the module does not declare")
            for name, parameter in declared.items():
                if parameter.get("default") is None and name not in passed:
                    report.fail("wiring", f"{where}: does not pass required parameter {name!r}")
        for symbol, output in module_output_references(template, set(modules)):
            target = target_of(path, modules[symbol])
            if target in parsed and output not in (parsed[target].get("outputs") or {}):
                report.fail("wiring", f"{rel(path, root)}: {symbol}.outputs.{output} is not an output of {rel(target, root)}")

    main, parameters_file = root / "infra" / "main.bicep", root / "infra" / "main.parameters.json"
    if not main.exists():
        report.fail("wiring", "infra/main.bicep is missing")
        return
    if not parameters_file.exists():
        report.fail("wiring", "infra/main.parameters.json is missing")
        return
    try:
        given = json.loads(parameters_file.read_text(encoding="utf-8")).get("parameters", {})
    except json.JSONDecodeError as error:
        report.fail("wiring", f"infra/main.parameters.json is not JSON: {error}")
        return
    if main.resolve() in parsed:
        declared = parsed[main.resolve()].get("parameters") or {}
        for name in given:
            if name not in declared:
                report.fail("wiring", f"infra/main.parameters.json gives {name!r}, which main.bicep does not declare")
        for name, parameter in declared.items():
            if parameter.get("default") is None and name not in given:
                report.fail("wiring", f"infra/main.parameters.json does not give required parameter {name!r}")
    report.note("wiring", f"{len(parsed)} templates read with pycep; modules, outputs and main.parameters.json consistent")


# --------------------------------------------------------------------------------------------
# 3. Policy (checkov)
# --------------------------------------------------------------------------------------------


@dataclass
class Skip:
    id: str
    reason: str
    resources: list[str]
    used: bool = False

    def covers(self, check_id: str, resource: str) -> bool:
        return check_id == self.id and (not self.resources or resource in self.resources)


def load_skips(root: Path, report: Report) -> list[Skip]:
    path = root / "infra" / "checkov" / "skips.toml"
    if not path.exists():
        return []
    try:
        entries = tomllib.loads(path.read_text(encoding="utf-8")).get("skip", [])
    except tomllib.TOMLDecodeError as error:
        report.fail("checkov", f"infra/checkov/skips.toml: {error}")
        return []
    skips = []
    for entry in entries:
        check_id, reason = str(entry.get("id", "")).strip(), " ".join(str(entry.get("reason", "")).split())
        if not check_id or not reason:
            report.fail("checkov", f"infra/checkov/skips.toml: every skip needs an id and a reason: {entry}")
            continue
        if check_id.startswith(PROJECT_CHECK_PREFIX):
            report.fail("checkov", f"infra/checkov/skips.toml: project check {check_id} cannot be skipped; fix the template")
            continue
        skips.append(Skip(check_id, reason, list(entry.get("resources", []))))
    return skips


def project_check_ids(root: Path) -> set[str]:
    ids: set[str] = set()
    for path in (root / "infra" / "checkov").glob("*.py"):
        ids.update(re.findall(r'id="(' + PROJECT_CHECK_PREFIX + r'\d+)"', path.read_text(encoding="utf-8")))
    return ids


def pycep_reason(path: Path) -> str:
    try:
        pycep_parse(path.read_text(encoding="utf-8"))
    except Exception as error:
        text = str(error).strip()
        return text.splitlines()[0] if text else type(error).__name__
    return "no error from pycep itself"


@dataclass
class CheckovRun:
    """checkov's Bicep results for one directory tree, or why there are none."""

    results: dict[str, Any]
    elapsed: float
    error: str = ""

    def under(self, root: Path) -> dict[str, Any]:
        """The results for the files under `root` (one run may cover several copies)."""
        prefix = str(root.resolve()) + os.sep

        def inside(path: str) -> bool:
            return str(Path(path).resolve()).startswith(prefix)

        return {
            "passed_checks": [c for c in self.results.get("passed_checks", []) if inside(c.get("file_abs_path", ""))],
            "failed_checks": [c for c in self.results.get("failed_checks", []) if inside(c.get("file_abs_path", ""))],
            "parsing_errors": [p for p in self.results.get("parsing_errors", []) if inside(p)],
        }


def run_checkov(checkov: str, scan: Path, checks_dir: Path | None) -> CheckovRun:
    command = [checkov, "-d", str(scan), "--framework", "bicep", "-o", "json", "--compact", "--skip-download"]
    if checks_dir is not None and checks_dir.is_dir():
        command += ["--external-checks-dir", str(checks_dir)]
    env = dict(os.environ, BC_SKIP_MAPPING="TRUE", PYTHONDONTWRITEBYTECODE="1", LOG_LEVEL="ERROR")
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=scan)
    elapsed = time.monotonic() - started
    try:
        output = json.loads(result.stdout)
    except json.JSONDecodeError:
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        return CheckovRun({}, elapsed, f"checkov gave no JSON (exit {result.returncode}): {' | '.join(tail)}")
    reports = output if isinstance(output, list) else [output]
    bicep = [r for r in reports if isinstance(r, dict) and r.get("check_type") == "bicep"]
    if not bicep:
        return CheckovRun({}, elapsed, f"checkov produced no Bicep report (no .bicep files under {scan}?)")
    return CheckovRun(bicep[0].get("results", {}), elapsed)


def check_policy(root: Path, checkov: str, report: Report, shared: CheckovRun | None = None) -> None:
    """checkov's verdict on root/infra; `shared` is a run over several copies (the self-test)."""
    infra = root / "infra"
    for path in bicep_files(root):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(r"checkov\s*:\s*skip", line, re.IGNORECASE):
                report.fail("checkov", f"{rel(path, root)}:{number}: inline checkov skip; skip in infra/checkov/skips.toml, with a reason")
    skips = load_skips(root, report)
    checks_dir = infra / "checkov"
    if checks_dir.is_dir() and not (checks_dir / "__init__.py").exists():
        report.fail("checkov", "infra/checkov/__init__.py is missing: checkov would silently load none of the project checks")
    run = shared or run_checkov(checkov, infra, checks_dir)
    if run.error:
        report.fail("checkov", run.error)
        return
    results = run.under(root)
    parsing_errors = results["parsing_errors"]
    for path in parsing_errors:
        report.fail("checkov", f"parsing error: checkov could not read {rel(Path(path), root)} and skipped it: {pycep_reason(Path(path))}")
    ran = {c["check_id"] for kind in ("passed_checks", "failed_checks") for c in results[kind]}
    for check_id in sorted(project_check_ids(root) - ran):
        report.fail("checkov", f"project check {check_id} did not run on any resource (not loaded, or its resources are gone)")
    failed = results["failed_checks"]
    skipped = 0
    for check in failed:
        check_id, resource = check["check_id"], check.get("resource", "")
        where = f"{rel(Path(check.get('file_abs_path', '')), root)} {resource}"
        skip = next((s for s in skips if s.covers(check_id, resource)), None)
        if skip:
            skip.used = True
            skipped += 1
            continue
        report.fail("checkov", f"{check_id} failed: {check.get('check_name')} — {where}")
    for skip in skips:
        if not skip.used:
            scope = f" for {', '.join(skip.resources)}" if skip.resources else ""
            report.fail("checkov", f"skip {skip.id}{scope} in infra/checkov/skips.toml matches no failure any more; remove it")
    report.note(
        "checkov",
        f"{len(results['passed_checks'])} passed, {len(failed)} failed ({skipped} skipped with a reason), "
        f"{len(parsing_errors)} parsing errors, {run.elapsed:.1f}s",
    )


# --------------------------------------------------------------------------------------------
# 4. Function triggers
# --------------------------------------------------------------------------------------------


def check_functions(root: Path, report: Report) -> None:
    http_triggers = 0
    anonymous_allowed = 0
    for path in sorted(root.glob("*/function.json")):
        try:
            bindings = json.loads(path.read_text(encoding="utf-8")).get("bindings", [])
        except json.JSONDecodeError as error:
            report.fail("functions", f"{rel(path, root)} is not JSON: {error}")
            continue
        for binding in bindings:
            if str(binding.get("type", "")).lower() != "httptrigger":
                continue
            http_triggers += 1
            level = binding.get("authLevel")
            if level is None:
                report.fail("functions", f"{rel(path, root)}: HTTP trigger {binding.get('name')!r} has no explicit authLevel")
            elif str(level).lower() == "anonymous":
                route_prefix = ANONYMOUS_HTTP_FUNCTIONS.get(path.parent.name)
                route = str(binding.get("route") or "")
                where = f"{rel(path, root)}: HTTP trigger {binding.get('name')!r} is anonymous"
                if route_prefix is None:
                    report.fail("functions", f"{where}; use authLevel function (or admin)")
                elif route.split("/")[0] != route_prefix:
                    report.fail("functions", f"{where} on route {route!r}; only the {route_prefix!r} route (App Service "
                                "authentication in front) may be anonymous, use authLevel function (or admin)")
                elif problems := grant_auth_problems(root):
                    report.fail("functions", f"{where}, but App Service authentication is not wired for it: {problems[0]}")
                else:
                    anonymous_allowed += 1
    if not (root / "function-http" / "function.json").exists():
        report.fail("functions", "function-http/function.json is missing")
    elif http_triggers == 0:
        report.fail("functions", "no HTTP trigger found in any function.json")
    report.note("functions", f"{http_triggers} HTTP trigger(s) checked for authLevel ({anonymous_allowed} anonymous behind "
                "App Service authentication)")


# --------------------------------------------------------------------------------------------
# 5. Parameters that must be given
# --------------------------------------------------------------------------------------------


def decorator(parameter: dict[str, Any], kind: str) -> Any:
    """The argument of a pycep parameter's decorator of `kind` (`min_length`, `description`, …)."""
    for item in parameter.get("decorators") or []:
        if item.get("type") == kind:
            return item.get("argument")
    return None


def check_parameters(root: Path, report: Report) -> None:
    main, parameters_file = root / "infra" / "main.bicep", root / "infra" / "main.parameters.json"
    try:
        declared = pycep_parse(main.read_text(encoding="utf-8")).get("parameters") or {}
        given = json.loads(parameters_file.read_text(encoding="utf-8")).get("parameters", {})
    except Exception:  # the wiring stage reports an unreadable template or parameters file
        return
    for name in sorted(set(REQUIRED_PARAMETERS) - set(declared)):
        report.fail("parameters", f"infra/main.bicep does not declare {name!r}, a parameter a deployment must be given")
    for name, parameter in declared.items():
        minimum = decorator(parameter, "min_length")
        not_empty = isinstance(minimum, int) and minimum >= 1
        default = parameter.get("default")
        value = (given.get(name) or {}).get("value")
        substituted = isinstance(value, str) and "${" in value
        fallback = re.search(r"\$\{[^}=]*=([^}]*)\}", value) if substituted else None
        if name in REQUIRED_PARAMETERS:
            where = f"infra/main.bicep: parameter {name!r}, which a deployment must be given,"
            if default is not None:
                empty = "an empty" if default in ("", [], {}) else "a"
                report.fail("parameters", f"{where} has {empty} default ({default!r}): azd would not ask for it "
                            "and the deployment would go ahead without it; remove the default")
            if parameter.get("type") == "string" and not not_empty:
                report.fail("parameters", f"{where} has no @minLength(1): azd's prompt would take an empty answer")
            if not decorator(parameter, "description"):
                report.fail("parameters", f"{where} has no @description: azd's prompt would not say what it wants")
            expected = f"${{{REQUIRED_PARAMETERS[name]}}}"
            if name in given and value != expected:
                why = "a `=fallback` is a default again" if fallback else "azd must ask when the variable is unset"
                report.fail("parameters", f"infra/main.parameters.json gives {name!r} as {value!r}, not {expected}: {why}")
        elif not_empty:
            # A parameter that may not be empty: its default, and what main.parameters.json gives
            # when the variable is unset (azd then passes '' over a default), must not be empty.
            where = f"infra/main.bicep: parameter {name!r} (@minLength({minimum}))"
            if default in ("", [], {}):
                report.fail("parameters", f"{where} has an empty default")
            if substituted and default is not None and (fallback is None or not fallback.group(1)):
                report.fail("parameters", f"infra/main.parameters.json gives {name!r} as {value!r}: with the variable unset "
                            "azd would pass an empty value over the default; give a non-empty `=fallback`")
    report.note("parameters", f"no default for the parameters a deployment must be given ({', '.join(REQUIRED_PARAMETERS)}), "
                "no empty value for those with a @minLength")


# --------------------------------------------------------------------------------------------
# 6. azd hooks
# --------------------------------------------------------------------------------------------


def hook_entries(hook: Any) -> dict[str, dict[str, Any]]:
    """A hook of azure.yaml by platform: {"posix": …, "windows": …}; a hook without `posix` and
    `windows` serves both."""
    if not isinstance(hook, dict):
        return {}
    if "posix" in hook or "windows" in hook:
        return {os_name: hook[os_name] for os_name in ("posix", "windows") if isinstance(hook.get(os_name), dict)}
    return {"posix": hook, "windows": hook}


def check_preprovision_wiring(root: Path, config: dict[str, Any], report: Report) -> None:
    hook = (config.get("hooks") or {}).get("preprovision")
    if hook is None:
        report.fail("hooks", f"azure.yaml has no preprovision hook: nothing would ask for the vaults or check them ({PREPROVISION_HOOK})")
        return
    entries = hook_entries(hook)
    for os_name in ("posix", "windows"):
        entry = entries.get(os_name)
        where = f"azure.yaml: the preprovision hook on {os_name}"
        if entry is None:
            report.fail("hooks", f"{where} is missing")
            continue
        run = str(entry.get("run", ""))
        if PREPROVISION_HOOK not in run:
            report.fail("hooks", f"{where} does not run {PREPROVISION_HOOK} (it runs {run!r})")
        if entry.get("interactive") is not True:
            report.fail("hooks", f"{where} is not interactive: the hook could not ask for the vaults")
        shell = entry.get("shell", "sh")
        if shell == "pwsh" and not re.search(r"exit\s+\$LASTEXITCODE\s*$", run):
            report.fail("hooks", f"{where} runs under pwsh without `exit $LASTEXITCODE`: a refusal would not stop azd")
        if entry.get("continueOnError"):
            report.fail("hooks", f"{where} has continueOnError: a refusal would not stop azd")
    hook_text = (root / PREPROVISION_HOOK).read_text(encoding="utf-8") if (root / PREPROVISION_HOOK).exists() else ""
    for name, variable in REQUIRED_PARAMETERS.items():
        if variable.startswith("TAGFENCE_") and variable not in hook_text:
            report.fail("hooks", f"{PREPROVISION_HOOK} does not read {variable} (parameter {name!r})")


def check_hooks(root: Path, report: Report) -> None:
    azure_yaml = root / "azure.yaml"
    if not azure_yaml.exists():
        report.fail("hooks", "azure.yaml is missing")
    else:
        text = azure_yaml.read_text(encoding="utf-8")
        for match in re.finditer(r"^\s*run:\s*(\S.*)$", text, re.MULTILINE):
            for word in match.group(1).strip().strip("'\"").replace(";", " ").split():
                if re.search(r"\.(sh|py|ps1)$", word) and not (root / word).exists():
                    report.fail("hooks", f"azure.yaml runs {word}, which does not exist")
        try:
            import yaml
        except ImportError as error:
            raise SystemExit(f"infra_gate: {error}; run scripts/infra_gate.sh, which installs checkov (and PyYAML)") from error
        try:
            config = yaml.safe_load(text) or {}
        except yaml.YAMLError as error:
            report.fail("hooks", f"azure.yaml is not YAML: {' '.join(str(error).split())}")
            config = {}
        check_preprovision_wiring(root, config if isinstance(config, dict) else {}, report)
    shell_hooks = sorted((root / "infra" / "hooks").glob("*.sh"))
    for hook in shell_hooks:
        if not os.access(hook, os.X_OK):
            report.fail("hooks", f"{rel(hook, root)} is not executable")
        result = subprocess.run(["bash", "-n", str(hook)], capture_output=True, text=True)
        if result.returncode != 0:
            report.fail("hooks", f"{rel(hook, root)}: bash -n: {result.stderr.strip()}")
    python_hooks = sorted((root / "infra" / "hooks").glob("*.py"))
    for hook in python_hooks:
        try:
            compile(hook.read_text(encoding="utf-8"), str(hook), "exec")
        except SyntaxError as error:
            report.fail("hooks", f"{rel(hook, root)}:{error.lineno}: {error.msg}")
    report.note("hooks", f"{len(shell_hooks) + len(python_hooks)} hook script(s); preprovision wired on POSIX and Windows")


# --------------------------------------------------------------------------------------------
# 7. The preprovision hook's verdicts
# --------------------------------------------------------------------------------------------

GUID_A = "00000000-0000-0000-0000-0000000000aa"
VAULT_A = f"/subscriptions/{GUID_A}/resourceGroups/rg-kv/providers/Microsoft.KeyVault/vaults/kv-a"
VAULT_B = f"/subscriptions/{GUID_A}/resourceGroups/rg-kv/providers/Microsoft.KeyVault/vaults/kv-b"


@dataclass
class HookCase:
    """The preprovision hook run with `env` (and no terminal) must exit `status` and print every
    string of `says` (stdout and stderr together); `stores` the `azd env set` arguments it must
    make, one string each."""

    name: str
    env: dict[str, str]
    status: int
    says: list[str] = field(default_factory=list)
    stores: list[str] = field(default_factory=list)


STORAGE_A = f"/subscriptions/{GUID_A}/resourceGroups/rg-st/providers/Microsoft.Storage/storageAccounts/sta"
REGISTRY_A = f"/subscriptions/{GUID_A}/resourceGroups/rg-cr/providers/Microsoft.ContainerRegistry/registries/cra01"
VAULT_SHAPE_TEXT = "/subscriptions/<GUID>/resourceGroups/<name>/providers/Microsoft.KeyVault/vaults/<name>"
RESOURCE_SHAPE_TEXT = ("/subscriptions/<GUID>/resourceGroups/<name>/providers/<type>/<name>, <type> being "
                       "Microsoft.KeyVault/vaults, Microsoft.Storage/storageAccounts or Microsoft.ContainerRegistry/registries")
PREPROVISION_CASES = [
    HookCase("nothing selected", {}, 1, ["nothing selected", "azd env set TAGFENCE_RESOURCES", VAULT_SHAPE_TEXT,
                                         "Microsoft.Storage/storageAccounts"]),
    HookCase("only blanks and commas", {"TAGFENCE_VAULTS": " , ,", "TAGFENCE_RESOURCES": " ,"}, 1, ["nothing selected"]),
    HookCase("one vault id", {"TAGFENCE_VAULTS": VAULT_A}, 0, ["1 resource(s) listed (1 vault(s), 0 storage account(s)"]),
    HookCase("two vault ids, spaced, fixed segments in another case",
             {"TAGFENCE_VAULTS": f" {VAULT_A} , {VAULT_B.replace('resourceGroups', 'resourcegroups')}"}, 0, ["2 resource(s) listed"]),
    HookCase("every kind in TAGFENCE_VAULTS, the type in another case",
             {"TAGFENCE_VAULTS": f"{VAULT_A},{STORAGE_A.replace('Microsoft.Storage/storageAccounts', 'microsoft.storage/STORAGEACCOUNTS')},"
                                 f"{REGISTRY_A}"}, 0,
             ["3 resource(s) listed (1 vault(s), 1 storage account(s), 1 registry(s))"]),
    HookCase("resources only: TAGFENCE_VAULTS becomes none",
             {"TAGFENCE_RESOURCES": f"{STORAGE_A},{REGISTRY_A}"}, 0, ["TAGFENCE_RESOURCES lists them", "2 resource(s) listed"],
             ["env set TAGFENCE_VAULTS none"]),
    HookCase("none beside resources", {"TAGFENCE_VAULTS": "NONE", "TAGFENCE_RESOURCES": VAULT_A}, 0, ["1 resource(s) listed"]),
    HookCase("a resource in both lists", {"TAGFENCE_VAULTS": REGISTRY_A, "TAGFENCE_RESOURCES": REGISTRY_A.upper().replace(GUID_A.upper(), GUID_A)},
             1, ["TAGFENCE_RESOURCES entry", "listed twice", "in TAGFENCE_VAULTS"]),
    HookCase("a vault name alone", {"TAGFENCE_VAULTS": "kv-a"}, 1,
             ["TAGFENCE_VAULTS entry 'kv-a'", f"expected {RESOURCE_SHAPE_TEXT}"]),
    HookCase("a name alone in TAGFENCE_RESOURCES", {"TAGFENCE_RESOURCES": "sta"}, 1,
             ["TAGFENCE_RESOURCES entry 'sta'", "does not start with /subscriptions/"]),
    HookCase("a subscription that is not a GUID",
             {"TAGFENCE_VAULTS": VAULT_A.replace(GUID_A, "my-sub")}, 1, ["the subscription 'my-sub' is not a GUID"]),
    HookCase("a subscription that is not a GUID, in TAGFENCE_RESOURCES",
             {"TAGFENCE_RESOURCES": REGISTRY_A.replace(GUID_A, "my-sub")}, 1, ["the subscription 'my-sub' is not a GUID"]),
    HookCase("a type tagfence does not manage",
             {"TAGFENCE_RESOURCES": VAULT_A.replace("Microsoft.KeyVault/vaults", "Microsoft.Sql/servers")},
             1, ["its type Microsoft.Sql/servers is not one tagfence manages", "Microsoft.ContainerRegistry/registries"]),
    HookCase("other fixed segments", {"TAGFENCE_VAULTS": VAULT_A.replace("resourceGroups", "groups")}, 1, ["fixed segments"]),
    HookCase("a trailing slash", {"TAGFENCE_VAULTS": VAULT_A + "/"}, 1, ["ends with /"]),
    HookCase("a vault name too short", {"TAGFENCE_VAULTS": VAULT_A.replace("kv-a", "kv")}, 1, ["the vault name 'kv'"]),
    HookCase("a storage account name with capitals", {"TAGFENCE_RESOURCES": STORAGE_A.replace("/sta", "/StA")}, 1,
             ["the storage account name 'StA' is not 3-24 lower-case letters or digits"]),
    HookCase("a registry name with a hyphen", {"TAGFENCE_RESOURCES": REGISTRY_A.replace("cra01", "cr-a01")}, 1,
             ["the registry name 'cr-a01' is not 5-50 letters or digits"]),
    HookCase("nine segments", {"TAGFENCE_VAULTS": VAULT_A + "/secrets"}, 1, ["9 segments"]),
    HookCase("a vault listed twice", {"TAGFENCE_VAULTS": f"{VAULT_A},{VAULT_A.upper().replace(GUID_A.upper(), GUID_A)}"}, 1, ["listed twice"]),
    HookCase("every bad entry reported, one line each",
             {"TAGFENCE_VAULTS": f"kv-a,{VAULT_B},kv-c"}, 1, ["entry 'kv-a'", "entry 'kv-c'"]),
    HookCase("a kind TAGFENCE_KINDS leaves out (the role could not write it)",
             {"TAGFENCE_RESOURCES": f"{VAULT_A},{STORAGE_A}", "TAGFENCE_KINDS": "key_vault"}, 1,
             [f"TAGFENCE_RESOURCES entry '{STORAGE_A}': a storage account, but TAGFENCE_KINDS (key_vault) leaves out storage_account"]),
    HookCase("kinds in any spelling", {"TAGFENCE_VAULTS": f"{STORAGE_A},{REGISTRY_A}", "TAGFENCE_KINDS": " Storage-Account,CONTAINER_REGISTRY "},
             0, ["the role may write storage_account, container_registry"]),
    HookCase("an unknown kind", {"TAGFENCE_VAULTS": VAULT_A, "TAGFENCE_KINDS": "key_vault,cosmos"}, 1,
             ["TAGFENCE_KINDS entry 'cosmos': not a kind; expected key_vault, storage_account or container_registry"]),
    HookCase("none in TAGFENCE_RESOURCES", {"TAGFENCE_VAULTS": VAULT_A, "TAGFENCE_RESOURCES": "none"}, 1,
             ["none is only for TAGFENCE_VAULTS"]),
    HookCase("none without anything else", {"TAGFENCE_VAULTS": "none"}, 1, ["TAGFENCE_VAULTS=none lists nothing"]),
    HookCase("none beside a vault id", {"TAGFENCE_VAULTS": f"{VAULT_A},none"}, 1, ["cannot stand beside resource ids"]),
    HookCase("none with a discovery subscription",
             {"TAGFENCE_VAULTS": "None", "TAGFENCE_DISCOVER_SUBSCRIPTIONS": GUID_A}, 0, ["1 discovery scope(s)"]),
    HookCase("a discovery subscription alone: TAGFENCE_VAULTS becomes none",
             {"TAGFENCE_DISCOVER_SUBSCRIPTIONS": GUID_A}, 0, ["discovery selects them"], ["env set TAGFENCE_VAULTS none"]),
    HookCase("a management group alone", {"TAGFENCE_DISCOVER_MANAGEMENT_GROUPS": "mg-platform"}, 0, [],
             ["env set TAGFENCE_VAULTS none"]),
    HookCase("a discovery subscription as a resource id",
             {"TAGFENCE_VAULTS": "none", "TAGFENCE_DISCOVER_SUBSCRIPTIONS": f"/subscriptions/{GUID_A}"}, 1,
             ["TAGFENCE_DISCOVER_SUBSCRIPTIONS entry", "expected a GUID"]),
    HookCase("a management group with a space",
             {"TAGFENCE_VAULTS": "none", "TAGFENCE_DISCOVER_MANAGEMENT_GROUPS": "mg platform"}, 1,
             ["TAGFENCE_DISCOVER_MANAGEMENT_GROUPS entry 'mg platform'"]),
    HookCase("none with a configuration file", {"TAGFENCE_VAULTS": "none", "TAGFENCE_CONFIG": "tagfence.toml"}, 0,
             ["must list the resources"]),
    HookCase("a role resource group of the wrong shape",
             {"TAGFENCE_VAULTS": VAULT_A, "VAULT_ROLE_RESOURCE_GROUPS": "rg-kv"}, 1, ["VAULT_ROLE_RESOURCE_GROUPS entry 'rg-kv'"]),
    HookCase("role scopes of the right shape",
             {"TAGFENCE_VAULTS": VAULT_A, "VAULT_ROLE_RESOURCE_GROUPS": f"/subscriptions/{GUID_A}/resourceGroups/rg-kv",
              "VAULT_ROLE_SUBSCRIPTIONS": f"{GUID_A},/subscriptions/{GUID_A}"}, 0, []),
]


@functools.lru_cache(maxsize=None)
def preprovision_verdicts(hook_source: str) -> tuple[str, ...]:
    """What is wrong with the hook whose text is `hook_source`, case by case (cached: the
    self-test's copies mostly share the hook)."""
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="tagfence-preprovision-") as tmp:
        hook, bin_dir, calls = Path(tmp) / "preprovision.py", Path(tmp) / "bin", Path(tmp) / "azd-calls"
        hook.write_text(hook_source, encoding="utf-8")
        bin_dir.mkdir()
        fake_azd = bin_dir / "azd"
        fake_azd.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{calls}"\n', encoding="utf-8")
        fake_azd.chmod(0o755)
        for case in PREPROVISION_CASES:
            calls.unlink(missing_ok=True)
            env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONDONTWRITEBYTECODE": "1", **case.env}
            result = subprocess.run([sys.executable, str(hook)], env=env, cwd=tmp, stdin=subprocess.DEVNULL,
                                    capture_output=True, text=True, timeout=30)
            output = result.stdout + result.stderr
            stored = calls.read_text(encoding="utf-8").splitlines() if calls.exists() else []
            problems = []
            if result.returncode != case.status:
                problems.append(f"exit {result.returncode}, not {case.status}")
            problems += [f"does not say {text!r}" for text in case.says if text not in output]
            if stored != case.stores:
                problems.append(f"stored {stored}, not {case.stores}")
            if case.status == 0 and result.stderr.strip():
                problems.append("printed to stderr on success")
            if problems:
                last = (output.strip().splitlines() or [""])[-1][:160]
                failures.append(f"{case.name}: {'; '.join(problems)} (last line: {last!r})")
        failures.extend(prompt_verdicts(hook, bin_dir, calls))
    return tuple(failures)


# On a terminal with nothing selected: a vault name alone is refused and asked again, an empty
# answer asks for subscriptions, an empty one again says one of the two is required, and a GUID is
# stored with TAGFENCE_VAULTS=none.
PROMPT_ANSWERS = ["kv-a", "", "", "", GUID_A]
PROMPT_SAYS = ["Resource ids:", "Microsoft.Storage/storageAccounts", "TAGFENCE_VAULTS entry 'kv-a'", "one of the two is required",
               "1 discovery scope(s)"]
PROMPT_STORES = ["env set TAGFENCE_VAULTS none", f"env set TAGFENCE_DISCOVER_SUBSCRIPTIONS {GUID_A}"]


def prompt_verdicts(hook: Path, bin_dir: Path, calls: Path) -> list[str]:
    """The hook's question, answered through a pseudo-terminal (the way azd's `interactive: true`
    gives it the console)."""
    import pty

    calls.unlink(missing_ok=True)
    controller, terminal = pty.openpty()
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONDONTWRITEBYTECODE": "1"}
    process = subprocess.Popen([sys.executable, str(hook)], env=env, cwd=hook.parent,
                               stdin=terminal, stdout=terminal, stderr=terminal, close_fds=True)
    os.close(terminal)
    os.write(controller, "".join(f"{answer}\n" for answer in PROMPT_ANSWERS).encode())
    output, deadline = b"", time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # EIO: the hook has exited and closed the terminal
            break
        if not chunk:
            break
        output += chunk
    os.close(controller)
    try:
        status = process.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        process.kill()
        return ["on a terminal: still waiting for input after every answer was given"]
    text = output.decode("utf-8", "replace")
    stored = calls.read_text(encoding="utf-8").splitlines() if calls.exists() else []
    problems = [f"exit {status}, not 0"] if status != 0 else []
    problems += [f"does not say {said!r}" for said in PROMPT_SAYS if said not in text]
    if stored != PROMPT_STORES:
        problems.append(f"stored {stored}, not {PROMPT_STORES}")
    return [f"on a terminal, answered {PROMPT_ANSWERS}: {'; '.join(problems)}"] if problems else []


POSTDEPLOY_HOOK = "infra/hooks/postdeploy.sh"
KIND_WRITES = ["Microsoft.KeyVault/vaults/write", "Microsoft.Storage/storageAccounts/write",
               "Microsoft.ContainerRegistry/registries/write"]
# TAGFENCE_KINDS (None: unset) and the write operations the Event Grid subscription must filter on
# (None: the hook must refuse).
POSTDEPLOY_CASES: list[tuple[str | None, list[str] | None]] = [
    (None, KIND_WRITES),
    (" , ", KIND_WRITES),
    ("Storage-Account", ["Microsoft.Storage/storageAccounts/write"]),
    ("container_registry, KEY_VAULT,key-vault", ["Microsoft.ContainerRegistry/registries/write", "Microsoft.KeyVault/vaults/write"]),
    ("cosmos", None),
]


@functools.lru_cache(maxsize=None)
def postdeploy_verdicts(hook_source: str) -> tuple[str, ...]:
    """The postdeploy hook, run with a stand-in `az`: the event subscription's operation filter
    for each POSTDEPLOY_CASES value of TAGFENCE_KINDS."""
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="tagfence-postdeploy-") as tmp:
        hook, bin_dir, calls = Path(tmp) / "postdeploy.sh", Path(tmp) / "bin", Path(tmp) / "az-calls"
        hook.write_text(hook_source, encoding="utf-8")
        bin_dir.mkdir()
        fake_az = bin_dir / "az"
        fake_az.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{calls}"\ncase "$*" in *"keys list"*) echo key ;; esac\n',
                           encoding="utf-8")
        fake_az.chmod(0o755)
        for kinds, wanted in POSTDEPLOY_CASES:
            calls.unlink(missing_ok=True)
            env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "AZURE_RESOURCE_GROUP": "rg",
                   "AZURE_FUNCTION_APP_NAME": "func", "AZURE_FUNCTION_APP_HOSTNAME": "func.example",
                   "EVENTGRID_SYSTEM_TOPIC_NAME": "topic", **({} if kinds is None else {"TAGFENCE_KINDS": kinds})}
            result = subprocess.run(["bash", str(hook)], env=env, cwd=tmp, stdin=subprocess.DEVNULL,
                                    capture_output=True, text=True, timeout=30)
            made = [line for line in (calls.read_text(encoding="utf-8").splitlines() if calls.exists() else [])
                    if "event-subscription create" in line]
            where = f"TAGFENCE_KINDS={'unset' if kinds is None else repr(kinds)}"
            if wanted is None:
                if result.returncode == 0 or made:
                    failures.append(f"{where}: exit {result.returncode}, {len(made)} subscription(s) made; it must refuse")
                continue
            filtered = re.search(r"--advanced-filter data\.operationName StringIn (.*?) --", made[0]).group(1).split() \
                if made and "--advanced-filter data.operationName StringIn" in made[0] else None
            if result.returncode != 0 or filtered != wanted:
                failures.append(f"{where}: exit {result.returncode}, operation filter {filtered}, not {wanted}")
    return tuple(failures)


def check_postdeploy(root: Path, report: Report) -> None:
    hook = root / POSTDEPLOY_HOOK
    if not hook.exists():
        return  # check_hooks reports what azure.yaml runs and is missing
    for failure in postdeploy_verdicts(hook.read_text(encoding="utf-8")):
        report.fail("postdeploy", f"{POSTDEPLOY_HOOK}, {failure}")
    report.note("postdeploy", f"the Event Grid subscription's operation filter checked for {len(POSTDEPLOY_CASES)} values of TAGFENCE_KINDS")


def check_preprovision(root: Path, report: Report) -> None:
    hook = root / PREPROVISION_HOOK
    if not hook.exists():
        report.fail("preprovision", f"{PREPROVISION_HOOK} is missing")
        return
    for failure in preprovision_verdicts(hook.read_text(encoding="utf-8")):
        report.fail("preprovision", f"{PREPROVISION_HOOK}, {failure}")
    report.note("preprovision", f"{len(PREPROVISION_CASES)} selections and one terminal session checked against {PREPROVISION_HOOK}")


# --------------------------------------------------------------------------------------------
# 8. App Service authentication for the grant route
# --------------------------------------------------------------------------------------------


def dig(node: Any, *keys: str) -> Any:
    """`node[k1][k2]…`, or None where a level is missing."""
    for key in keys:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


# What the authsettingsV2 resource must say, and why.
GRANT_AUTH_SETTINGS = [
    (("platform", "enabled"), True, "App Service authentication must be on, or the platform forwards no principal"),
    (("globalValidation", "requireAuthentication"), False,
     "authentication must not be required of every request: the function-key sync and the Event Grid webhook carry no Entra token"),
    (("globalValidation", "unauthenticatedClientAction"), "AllowAnonymous",
     "unauthenticated requests must reach the app: the function-key sync and the Event Grid webhook carry no Entra token "
     "(the grant handler refuses them itself)"),
    (("identityProviders", "azureActiveDirectory", "enabled"), True, "the Microsoft Entra ID provider must be on"),
]


def grant_auth_problems(root: Path) -> list[str]:
    """What is wrong with the App Service authentication of the grant route (empty: nothing)."""
    module = root / GRANT_AUTH_MODULE
    if not module.exists():
        return [f"{GRANT_AUTH_MODULE} is missing (App Service authentication in front of POST /api/grant)"]
    try:
        template = pycep_parse(module.read_text(encoding="utf-8"))
    except Exception:  # the wiring stage reports a template pycep cannot read
        return [f"{GRANT_AUTH_MODULE} cannot be read by checkov's Bicep parser"]
    problems: list[str] = []
    configs = [unwrap(resource.get("config")) for resource in (template.get("resources") or {}).values()
               if resource.get("type") == "Microsoft.Web/sites/config" and not resource.get("existing")]
    auth = [config for config in configs if str(config.get("name", "")).lower() == "authsettingsv2"]
    if len(auth) != 1:
        return [f"{GRANT_AUTH_MODULE}: expected one Microsoft.Web/sites/config resource named 'authsettingsV2', found {len(auth)}"]
    properties = auth[0].get("properties") or {}
    for keys, expected, why in GRANT_AUTH_SETTINGS:
        found = dig(properties, *keys)
        if found != expected:
            problems.append(f"{GRANT_AUTH_MODULE}: {'.'.join(keys)} is {found!r}, not {expected!r}: {why}")
    aad = dig(properties, "identityProviders", "azureActiveDirectory") or {}
    for keys in (("registration", "clientId"), ("registration", "openIdIssuer")):
        if not dig(aad, *keys):
            problems.append(f"{GRANT_AUTH_MODULE}: azureActiveDirectory.{'.'.join(keys)} is not set")
    audiences = dig(aad, "validation", "allowedAudiences")
    if not isinstance(audiences, list) or not any(isinstance(a, str) and a.startswith("api://") for a in audiences):
        problems.append(f"{GRANT_AUTH_MODULE}: azureActiveDirectory.validation.allowedAudiences has no api://<client id> audience "
                        "(the Application ID URI pipelines request tokens for)")
    main = root / "infra" / "main.bicep"
    try:
        main_template = pycep_parse(main.read_text(encoding="utf-8"))
    except Exception:
        return problems + ["infra/main.bicep cannot be read by checkov's Bicep parser"]
    calls = [module_config for module_config in (main_template.get("modules") or {}).values()
             if (main.parent / (module_config.get("detail") or {}).get("path", "")).resolve() == module.resolve()]
    if len(calls) != 1:
        problems.append(f"infra/main.bicep: expected one module call of {GRANT_AUTH_MODULE}, found {len(calls)}")
    else:
        condition = (calls[0].get("config") or {}).get("condition")
        if condition is None or GRANT_AUTH_PARAMETER not in json.dumps(condition, default=str):
            problems.append(f"infra/main.bicep: the module call of {GRANT_AUTH_MODULE} must be deployed only when "
                            f"{GRANT_AUTH_PARAMETER} is set (`if (!empty(...{GRANT_AUTH_PARAMETER}...))`)")
    parameter = (main_template.get("parameters") or {}).get(GRANT_AUTH_PARAMETER)
    if parameter is None or parameter.get("default") != "":
        problems.append(f"infra/main.bicep: parameter {GRANT_AUTH_PARAMETER!r} must be declared with the default '' "
                        "(grants over HTTP off unless an app registration is given)")
    return problems


def check_grant_auth(root: Path, report: Report) -> None:
    problems = grant_auth_problems(root)
    for problem in problems:
        report.fail("grants", problem)
    if not problems:
        report.note("grants", f"{GRANT_AUTH_MODULE}: App Service authentication (Microsoft Entra ID) without requiring every "
                    f"request, deployed only with {GRANT_AUTH_PARAMETER}")

# --------------------------------------------------------------------------------------------
# 9. Kinds: the firewall role's actions and the per-resource assignments
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KindInfra:
    """What the infra holds for one kind tagfence manages (src/core/kind.rs, src/azure/kinds.rs)."""

    name: str  # as in TAGFENCE_KINDS and enabledKinds
    resource_type: str  # its actions are <type>/read and <type>/write
    module: str  # the module that assigns the role on one resource of the kind
    name_parameter: str  # that module's parameter for the resource's name
    noun: str

    @property
    def actions(self) -> set[str]:
        return {f"{self.resource_type}/read".lower(), f"{self.resource_type}/write".lower()}


KINDS = [
    KindInfra("key_vault", "Microsoft.KeyVault/vaults", "infra/rbac/vault.bicep", "vaultName", "Key Vault"),
    KindInfra("storage_account", "Microsoft.Storage/storageAccounts", "infra/rbac/storage-account.bicep",
              "storageAccountName", "storage account"),
    KindInfra("container_registry", "Microsoft.ContainerRegistry/registries", "infra/rbac/registry.bicep",
              "registryName", "container registry"),
]
SERVICE_TAGS_READ = "Microsoft.Network/locations/serviceTags/read"
# enabledKinds values and the kinds tagfence reads from each (any case, `-` for `_`, blanks dropped;
# none at all: every kind). None: the parameter's default; it comes first, and the role holding
# kinds' actions with it is the firewall role.
ENABLED_KINDS_CASES: list[tuple[str | None, set[str]]] = [
    (None, {"key_vault", "storage_account", "container_registry"}),
    ("key_vault", {"key_vault"}),
    ("storage_account", {"storage_account"}),
    ("container_registry", {"container_registry"}),
    (" Storage-Account , KEY_VAULT", {"key_vault", "storage_account"}),
    ("container_registry,storage_account", {"storage_account", "container_registry"}),
    ("", {"key_vault", "storage_account", "container_registry"}),
    (" , ", {"key_vault", "storage_account", "container_registry"}),
]
KIND_GUID_A, KIND_GUID_B = "00000000-0000-0000-0000-0000000000aa", "00000000-0000-0000-0000-0000000000bb"
KIND_IDS = {
    "kv": f"/subscriptions/{KIND_GUID_A}/resourceGroups/rg-kv/providers/Microsoft.KeyVault/vaults/kv-a",
    "kv2": f"/subscriptions/{KIND_GUID_B}/resourcegroups/rg-kv2/providers/microsoft.keyvault/VAULTS/kv-b",
    "st": f"/subscriptions/{KIND_GUID_B}/resourceGroups/rg-st/providers/Microsoft.Storage/storageAccounts/sta",
    "st2": f"/subscriptions/{KIND_GUID_A}/resourcegroups/rg-st2/providers/microsoft.storage/storageaccounts/stb",
    "cr": f"/subscriptions/{KIND_GUID_A}/resourceGroups/rg-cr/providers/Microsoft.ContainerRegistry/registries/cra01",
}
# (vaults, listedResources): both lists take every kind, and `none` lists nothing.
LISTED_CASES = [
    (f"{KIND_IDS['kv']}, {KIND_IDS['st']}", f"{KIND_IDS['cr']},{KIND_IDS['st2']} ,{KIND_IDS['kv2']}"),
    ("none", KIND_IDS["st"]),
    (KIND_IDS["cr"], ""),
]


def canonical_action(action: str) -> str:
    """A kind's action as Microsoft spells it (the evaluation compares them lower-cased)."""
    for kind in KINDS:
        for verb in ("read", "write"):
            if action.lower() == f"{kind.resource_type}/{verb}".lower():
                return f"{kind.resource_type}/{verb}"
    return action


def kind_of(resource_id: str) -> KindInfra | None:
    parts = resource_id.split("/")
    if len(parts) != 9:
        return None
    return next((k for k in KINDS if f"{parts[6]}/{parts[7]}".lower() == k.resource_type.lower()), None)


def object_property(template: Template, node: Any, key: str) -> Any:
    """The value node of `key` in an object node (unwrapping `if (…) {…}`), or None."""
    if node is not None and node.type == "if_statement":
        node = [c for c in node.children if c.is_named][-1]
    if node is None or node.type != "object":
        return None
    for prop in (c for c in node.children if c.type == "object_property"):
        named = [c for c in prop.children if c.is_named and c.type != "comment"]
        name = template.text(named[0])
        if named[0].type == "string":
            name = name.strip("'")
        if name == key:
            return named[-1]
    return None


def bicep_template(path: Path) -> Template:
    return Template(path.read_bytes(), tree_sitter_parser())


def role_actions(main: Template, symbol: str, body: Any, enabled_kinds: str | None) -> list[str]:
    """The actions of a role definition with enabledKinds = `enabled_kinds` (None: its default);
    BicepEvalError when they cannot be evaluated offline."""
    permissions = object_property(main, object_property(main, body, "properties"), "permissions")
    if permissions is None:
        raise BicepEvalError(f"role definition {symbol} has no properties.permissions")
    evaluator = Evaluator(main, {} if enabled_kinds is None else {"enabledKinds": enabled_kinds})
    blocks = evaluator.value(permissions, {})
    if not isinstance(blocks, list) or not all(isinstance(block, dict) for block in blocks):
        raise BicepEvalError(f"role definition {symbol}: permissions is not an array of objects")
    actions = [a for block in blocks for a in (block.get("actions") or [])]
    return [str(a) for a in actions]


def role_action_problems(main: Template) -> list[str]:
    """The custom roles' actions, evaluated for each ENABLED_KINDS_CASES value: no role may hold a
    kind's actions unless enabledKinds names the kind; the firewall role (the one role holding
    kinds' actions with enabledKinds at its default) must hold those of every kind named, and
    Service Tags read."""
    roles = {symbol: body for symbol, (type_, existing, body) in main.resources.items()
             if type_.lower().startswith("microsoft.authorization/roledefinitions@") and not existing}
    if not roles:
        return ["infra/main.bicep: no custom role definition (Microsoft.Authorization/roleDefinitions) found"]
    kind_actions = {a for k in KINDS for a in k.actions}
    problems: list[str] = []
    firewall_roles: set[str] = set()
    for value, kinds in ENABLED_KINDS_CASES:
        shown = "at its default" if value is None else repr(value)
        wanted = set().union(*(k.actions for k in KINDS if k.name in kinds))
        for symbol, body in roles.items():
            try:
                actions = role_actions(main, symbol, body, value)
            except BicepEvalError as error:
                problems.append(f"infra/main.bicep: the actions of role definition {symbol} cannot be evaluated "
                                f"offline ({error}); keep them to parameters, variables and the functions of "
                                "scripts/infra_bicep_eval.py")
                continue
            held = {a.lower() for a in actions}
            if value is None and held & kind_actions:
                firewall_roles.add(symbol)
            for action in sorted(a for a in actions if "*" in a):
                problems.append(f"infra/main.bicep: role definition {symbol} holds the wildcard action {action!r}")
            for action in sorted(canonical_action(a) for a in held & kind_actions - wanted):
                problems.append(f"infra/main.bicep: role definition {symbol} grants {action} with enabledKinds {shown}, "
                                "which does not name its kind (least privilege: a kind's read and write only when "
                                "enabledKinds names the kind)")
            if symbol in firewall_roles:
                for action in sorted(canonical_action(a) for a in wanted - held):
                    problems.append(f"infra/main.bicep: role definition {symbol} lacks {action} with enabledKinds "
                                    f"{shown}, which names its kind (the listed resources of that kind could not be written)")
                if SERVICE_TAGS_READ.lower() not in held:
                    problems.append(f"infra/main.bicep: role definition {symbol} lacks {SERVICE_TAGS_READ} with enabledKinds {shown}")
        if value is None and len(firewall_roles) != 1:
            problems.append(f"infra/main.bicep: expected one role definition holding the kinds' actions with enabledKinds "
                            f"at its default, found {sorted(firewall_roles) or 'none'}")
            return problems
    return problems


def expected_assignments(vaults: str, listed: str) -> dict[str, set[tuple[Scope, str]]]:
    """Per kind, the (scope, name) of the assignment module each listed id must get."""
    expected: dict[str, set[tuple[Scope, str]]] = {k.name: set() for k in KINDS}
    for text in (vaults, listed):
        for entry in (e.strip() for e in text.split(",")):
            kind = kind_of(entry) if entry and entry.lower() != "none" else None
            if kind is not None:
                parts = entry.split("/")
                expected[kind.name].add((Scope("resourceGroup", (parts[2], parts[4])), parts[8]))
    return expected


def assignment_problems(root: Path, main: Template) -> list[str]:
    """Each kind's module: deployed into the listed resource's resource group, once per listed id
    of the kind (from both lists), assigning on the resource itself."""
    problems: list[str] = []
    infra = root / "infra"
    for kind in KINDS:
        module_path = root / kind.module
        if not module_path.exists():
            problems.append(f"{kind.module} is missing: nothing would assign the role on a listed {kind.noun}")
            continue
        module = bicep_template(module_path)
        if module.target_scope != "resourceGroup":
            problems.append(f"{kind.module}: targetScope is {module.target_scope!r}, not 'resourceGroup': the role must be "
                            f"assigned on the {kind.noun} itself, not on a wider scope")
        if kind.name_parameter not in module.params:
            problems.append(f"{kind.module}: no parameter {kind.name_parameter!r} (the {kind.noun}'s name)")
        targets = [symbol for symbol, (type_, existing, body) in module.resources.items()
                   if existing and type_.split("@")[0].lower() == kind.resource_type.lower()]
        if len(targets) != 1:
            problems.append(f"{kind.module}: expected one existing {kind.resource_type} resource, found {len(targets)}")
        else:
            name = object_property(module, module.resources[targets[0]][2], "name")
            if name is None or module.text(name) != kind.name_parameter:
                problems.append(f"{kind.module}: the existing {kind.resource_type} {targets[0]} is not named by "
                                f"the parameter {kind.name_parameter}")
        assignments = [(symbol, body) for symbol, (type_, existing, body) in module.resources.items()
                       if type_.lower().startswith("microsoft.authorization/roleassignments@")]
        if not assignments:
            problems.append(f"{kind.module}: no role assignment")
        for symbol, body in assignments:
            scope = object_property(module, body, "scope")
            if scope is None or not targets or module.text(scope) != targets[0]:
                found = module.text(scope) if scope is not None else "none: the module's resource group"
                problems.append(f"{kind.module}: role assignment {symbol} is not scoped to the {kind.noun} "
                                f"(scope: {targets[0] if targets else '<the ' + kind.noun + '>'}; found {found}), so it "
                                "would grant the role on more than the listed resource")
        calls = [(symbol, body) for symbol, (path, body) in main.modules.items()
                 if (infra / path).resolve() == module_path.resolve()]
        if len(calls) != 1:
            problems.append(f"infra/main.bicep: expected one module call of {kind.module} (a loop over the listed "
                            f"{kind.noun}s), found {len(calls)}")
            continue
        symbol, body = calls[0]
        if body.type != "for_statement":
            problems.append(f"infra/main.bicep: module {symbol} ({kind.module}) is not a loop over the listed {kind.noun}s")
            continue
        for vaults, listed in LISTED_CASES:
            evaluator = Evaluator(main, {"vaults": vaults, "listedResources": listed})
            where = f"infra/main.bicep: module {symbol} ({kind.module}) with vaults={vaults!r}, listedResources={listed!r}"
            item = [c for c in body.children if c.is_named and c.type != "comment"][-1]
            try:
                found = set()
                for scope in evaluator.loop_items(body):
                    deployed_at = evaluator.value(object_property(main, item, "scope"), scope) \
                        if object_property(main, item, "scope") is not None else None
                    name_node = object_property(main, object_property(main, item, "params"), kind.name_parameter)
                    name = evaluator.value(name_node, scope) if name_node is not None else None
                    found.add((deployed_at, name))
            except BicepEvalError as error:
                problems.append(f"{where}: cannot be evaluated offline ({error})")
                continue
            wanted = expected_assignments(vaults, listed)[kind.name]
            for deployed_at, name in sorted(found - wanted, key=str):
                if not isinstance(deployed_at, Scope) or deployed_at.kind != "resourceGroup":
                    problems.append(f"{where}: deployed at {deployed_at} for {name!r}; a kind's module must be deployed "
                                    "into the resource's resource group (resourceGroup(<subscription>, <group>) of its id)")
                else:
                    problems.append(f"{where}: assigns on {name!r} in {deployed_at}, which is no listed {kind.noun}")
            for deployed_at, name in sorted(wanted - found, key=str):
                problems.append(f"{where}: no role assignment on the listed {kind.noun} {name!r} ({deployed_at})")
    return problems


def check_kinds(root: Path, report: Report) -> None:
    main_path = root / "infra" / "main.bicep"
    if not main_path.exists():
        return  # the wiring stage reports it
    main = bicep_template(main_path)
    problems = role_action_problems(main) + assignment_problems(root, main)
    for problem in problems:
        report.fail("kinds", problem)
    if not problems:
        report.note("kinds", f"the firewall role holds a kind's actions only when enabledKinds names it "
                    f"({len(ENABLED_KINDS_CASES)} values evaluated); {len(KINDS)} kind modules assign on each listed "
                    f"resource in its resource group ({len(LISTED_CASES)} selections evaluated)")



# --------------------------------------------------------------------------------------------
# The gate
# --------------------------------------------------------------------------------------------


def run_gate(root: Path, checkov: str, shared: CheckovRun | None = None) -> Report:
    report = Report()
    if not bicep_files(root):
        report.fail("syntax", f"no .bicep files under {root / 'infra'}")
        return report
    check_syntax(root, report)
    check_wiring(root, report)
    check_policy(root, checkov, report, shared)
    check_functions(root, report)
    check_parameters(root, report)
    check_hooks(root, report)
    check_preprovision(root, report)
    check_postdeploy(root, report)
    check_grant_auth(root, report)
    check_kinds(root, report)
    return report


def print_report(report: Report, verbose: bool, out=sys.stdout) -> None:
    if verbose or report.passed:
        for note in report.notes:
            print(f"  ok   {note}", file=out)
    for failure in report.failures:
        print(f"  FAIL {failure}", file=out)


# --------------------------------------------------------------------------------------------
# Self-test
# --------------------------------------------------------------------------------------------


@dataclass
class Breakage:
    """One deliberate defect: replace `old` by `new` in `file` (or delete the file, or create it
    with the text `new`); the gate must then fail with a message containing `expect`."""

    name: str
    file: str
    old: str
    new: str
    expect: str
    delete: bool = False
    create: bool = False


BREAKAGES = [
    Breakage(
        "a syntax error in a .bicep file (unclosed resource body)",
        "infra/rbac/resource-group.bicep",
        "targetScope = 'resourceGroup'\n",
        "targetScope = 'resourceGroup'\n\nresource broken 'Microsoft.Storage/storageAccounts@2023-05-01' = {\n  name: 'broken'\n\n",
        "[syntax]",
    ),
    Breakage(
        "a role assignment without principalType",
        "infra/rbac/vault.bicep",
        "    principalType: 'ServicePrincipal'\n",
        "",
        "CKV_TAGFENCE_1",
    ),
    Breakage(
        "shared key access enabled on the storage account",
        "infra/app/resources.bicep",
        "allowSharedKeyAccess: false",
        "allowSharedKeyAccess: true",
        "CKV_TAGFENCE_2",
    ),
    Breakage(
        "an anonymous HTTP trigger",
        "function-http/function.json",
        '"authLevel": "function"',
        '"authLevel": "anonymous"',
        "is anonymous",
    ),
    Breakage(
        "a multi-line ternary, valid Bicep that checkov cannot parse (it would skip the file)",
        "infra/main.bicep",
        "var rgName = empty(resourceGroupName) ? 'rg-${environmentName}' : resourceGroupName\n",
        "var rgName = empty(resourceGroupName)\n  ? 'rg-${environmentName}'\n  : resourceGroupName\n",
        "parsing error",
    ),
    Breakage(
        "a site that accepts plain HTTP",
        "infra/app/resources.bicep",
        "httpsOnly: true",
        "httpsOnly: false",
        "CKV_TAGFENCE_3",
    ),
    Breakage(
        "storage accepting TLS 1.0",
        "infra/app/resources.bicep",
        "minimumTlsVersion: 'TLS1_2'",
        "minimumTlsVersion: 'TLS1_0'",
        "CKV_TAGFENCE_4",
    ),
    Breakage(
        "an inline checkov skip",
        "infra/app/resources.bicep",
        "resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {\n",
        "resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {\n  // checkov:skip=CKV_AZURE_225: hidden\n",
        "inline checkov skip",
    ),
    Breakage(
        "a module parameter the module does not declare",
        "infra/main.bicep",
        "      roleDefinitionGuid: firewallRole.name\n",
        "      roleDefinitionGuids: firewallRole.name\n",
        "does not declare",
    ),
    Breakage(
        "an unskipped checkov failure (Key Vault purge protection off on a new vault)",
        "infra/rbac/vault.bicep",
        "resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {\n  name: vaultName\n}\n",
        "resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {\n  name: vaultName\n}\n\n"
        "resource extra 'Microsoft.KeyVault/vaults@2023-07-01' = {\n  name: 'kv-${vaultName}'\n  location: 'westeurope'\n"
        "  properties: {\n    tenantId: subscription().tenantId\n    sku: {\n      family: 'A'\n      name: 'standard'\n    }\n"
        "    enablePurgeProtection: false\n  }\n}\n",
        "CKV_AZURE_110",
    ),
    Breakage(
        "a module output that does not exist",
        "infra/main.bicep",
        "app.outputs.functionAppName",
        "app.outputs.functionAppNames",
        "is not an output of",
    ),
    Breakage(
        "a parameters-file entry main.bicep does not declare",
        "infra/main.parameters.json",
        '"vaults": {',
        '"vault": {',
        "which main.bicep does not declare",
    ),
    Breakage(
        "a skip that no longer matches a failure",
        "infra/checkov/skips.toml",
        "[[skip]]\n",
        '[[skip]]\nid = "CKV_AZURE_999"\nreason = "stale"\n\n[[skip]]\n',
        "matches no failure any more",
    ),
    Breakage(
        "the vaults with an empty default (azd would not ask for them; issue 13, item 8)",
        "infra/main.bicep",
        "param vaults string\n",
        "param vaults string = ''\n",
        "has an empty default",
    ),
    Breakage(
        "the vaults without @minLength(1) (azd's prompt would take an empty answer)",
        "infra/main.bicep",
        "@minLength(1)\n@description('TAGFENCE_VAULTS:",
        "@description('TAGFENCE_VAULTS:",
        "has no @minLength(1)",
    ),
    Breakage(
        "a fallback for the vaults in main.parameters.json",
        "infra/main.parameters.json",
        '"value": "${TAGFENCE_VAULTS}"',
        '"value": "${TAGFENCE_VAULTS=}"',
        "a `=fallback` is a default again",
    ),
    Breakage(
        "a @minLength parameter that azd would pass empty when its variable is unset",
        "infra/main.parameters.json",
        '"value": "${TAGFENCE_STATE_CONTAINER=tagfence}"',
        '"value": "${TAGFENCE_STATE_CONTAINER}"',
        "give a non-empty `=fallback`",
    ),
    Breakage(
        "no preprovision hook in azure.yaml",
        "azure.yaml",
        "  preprovision:\n",
        "  preprovision-off:\n",
        "has no preprovision hook",
    ),
    Breakage(
        "a preprovision hook that cannot ask (not interactive)",
        "azure.yaml",
        "      interactive: true\n",
        "      interactive: false\n",
        "is not interactive",
    ),
    Breakage(
        "a preprovision hook under pwsh whose refusal would not stop azd",
        "azure.yaml",
        "; exit $LASTEXITCODE",
        "",
        "without `exit $LASTEXITCODE`",
    ),
    Breakage(
        "a preprovision hook that takes any subscription for a GUID",
        "infra/hooks/preprovision.py",
        'GUID_RE = re.compile(f"^{GUID}$")',
        'GUID_RE = re.compile(".+")',
        "a subscription that is not a GUID: exit 0, not 1",
    ),
    Breakage(
        "a preprovision hook that gives up on an empty answer instead of asking again",
        "infra/hooks/preprovision.py",
        'print(f"{PREFIX} one of the two is required: resource ids, or subscriptions to discover resources in")\n                continue',
        "return None",
        "on a terminal",
    ),
    Breakage(
        "the project checks' __init__.py removed (checkov would load none of them)",
        "infra/checkov/__init__.py",
        "",
        "",
        "__init__.py is missing",
        delete=True,
    ),
    Breakage(
        "App Service authentication that requires every request (the function-key sync and the Event Grid webhook would stop)",
        "infra/app/auth.bicep",
        "requireAuthentication: false",
        "requireAuthentication: true",
        "globalValidation.requireAuthentication",
    ),
    Breakage(
        "App Service authentication answering unauthenticated requests itself (401)",
        "infra/app/auth.bicep",
        "unauthenticatedClientAction: 'AllowAnonymous'",
        "unauthenticatedClientAction: 'Return401'",
        "globalValidation.unauthenticatedClientAction",
    ),
    Breakage(
        "App Service authentication deployed even without an app registration",
        "infra/main.bicep",
        "module grantAuth 'app/auth.bicep' = if (!empty(trim(grantAuthClientId))) {",
        "module grantAuth 'app/auth.bicep' = {",
        "must be deployed only when grantAuthClientId is set",
    ),
    Breakage(
        "an anonymous trigger in function-grant on a route other than grant",
        "function-grant/function.json",
        "",
        '{"bindings": [{"name": "req", "type": "httpTrigger", "direction": "in", "authLevel": "anonymous", '
        '"methods": ["post"], "route": "{action:alpha}"}, {"name": "res", "type": "http", "direction": "out"}]}\n',
        "only the 'grant' route",
        create=True,
    ),
    Breakage(
        "the App Service authentication module removed (the grant route would be anonymous with nothing in front)",
        "infra/app/auth.bicep",
        "",
        "",
        "infra/app/auth.bicep is missing",
        delete=True,
    ),
    Breakage(
        "the firewall role granting storage actions whatever enabledKinds says",
        "infra/main.bicep",
        "contains(kinds, 'storage_account') ? storageAccountActions : []",
        "storageAccountActions",
        "grants Microsoft.Storage/storageAccounts/write with enabledKinds 'key_vault'",
    ),
    Breakage(
        "the firewall role listing the Key Vault actions itself, as it did before the other kinds",
        "infra/main.bicep",
        "        actions: firewallRoleActions\n",
        "        actions: union(firewallRoleActions, keyVaultActions)\n",
        "grants Microsoft.KeyVault/vaults/write with enabledKinds 'storage_account'",
    ),
    Breakage(
        "enabledKinds read without trimming (' storage_account' would grant nothing)",
        "infra/main.bicep",
        "toLower(replace(trim(k), '-', '_'))",
        "toLower(k)",
        "lacks Microsoft.Storage/storageAccounts/write",
    ),
    Breakage(
        "the storage account module's assignment not scoped to the account (it would cover the resource group)",
        "infra/rbac/storage-account.bicep",
        "  scope: storageAccount\n",
        "",
        "is not scoped to the storage account",
    ),
    Breakage(
        "a kind module assigning at subscription scope",
        "infra/rbac/registry.bicep",
        "",
        "targetScope = 'subscription'\n\nparam registryName string\nparam principalId string\nparam roleDefinitionGuid string\n\n"
        "resource assignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {\n"
        "  name: guid(subscription().id, principalId, roleDefinitionGuid, registryName)\n  properties: {\n"
        "    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleDefinitionGuid)\n"
        "    principalId: principalId\n    principalType: 'ServicePrincipal'\n  }\n}\n",
        "targetScope is 'subscription', not 'resourceGroup'",
        create=True,
    ),
    Breakage(
        "a kind module deployed at the subscription of the resource instead of its resource group",
        "infra/main.bicep",
        "    name: 'tagfence-role-st-${i}-${resourceToken}'\n    scope: resourceGroup(split(id, '/')[2], split(id, '/')[4])\n",
        "    name: 'tagfence-role-st-${i}-${resourceToken}'\n    scope: subscription(split(id, '/')[2])\n",
        "a kind's module must be deployed into the resource's resource group",
    ),
    Breakage(
        "no role on the ids of listedResources (TAGFENCE_RESOURCES), as before",
        "infra/main.bicep",
        "var listedIds = union(vaultIds, resourceIds)\n",
        "var listedIds = vaultIds\n",
        "no role assignment on the listed container registry 'cra01'",
    ),
    Breakage(
        "registry ids matched by the wrong type",
        "infra/main.bicep",
        "== 'registries')",
        "== 'registry')",
        "no role assignment on the listed container registry",
    ),
    Breakage(
        "a preprovision hook that refuses storage account ids (a misspelt type)",
        "infra/hooks/preprovision.py",
        'Kind("storage_account", "Microsoft.Storage/storageAccounts"',
        'Kind("storage_account", "Microsoft.Storage/storageAccountz"',
        "every kind in TAGFENCE_VAULTS",
    ),
    Breakage(
        "a postdeploy hook that subscribes to Key Vault writes only, whatever TAGFENCE_KINDS says",
        "infra/hooks/postdeploy.sh",
        '--advanced-filter data.operationName StringIn "${operations[@]}"',
        "--advanced-filter data.operationName StringIn Microsoft.KeyVault/vaults/write",
        "TAGFENCE_KINDS='Storage-Account'",
    ),
    Breakage(
        "a preprovision hook that lets through a kind TAGFENCE_KINDS leaves out",
        "infra/hooks/preprovision.py",
        "elif kind is not None and kind not in kinds and not unknown_kinds:",
        "elif False:",
        "a kind TAGFENCE_KINDS leaves out",
    ),
]


def copy_project(source: Path, destination: Path) -> None:
    """The parts of the repository the gate reads."""
    shutil.copytree(source / "infra", destination / "infra", ignore=shutil.ignore_patterns("__pycache__"))
    for function_json in source.glob("*/function.json"):
        (destination / function_json.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy2(function_json, destination / function_json.parent.name / "function.json")
    if (source / "azure.yaml").exists():
        shutil.copy2(source / "azure.yaml", destination / "azure.yaml")
    if (source / "scripts" / "package.py").exists():
        (destination / "scripts").mkdir(exist_ok=True)
        shutil.copy2(source / "scripts" / "package.py", destination / "scripts" / "package.py")


def self_test(source: Path, checkov: str, verbose: bool) -> bool:
    print("infra gate self-test: the gate must pass on a pristine copy and fail on each breakage")
    ok = True
    with tempfile.TemporaryDirectory(prefix="tagfence-infra-gate-") as tmp:
        base = Path(tmp)

        def prepare(index: int, breakage: Breakage | None) -> Path:
            root = base / (f"broken-{index}" if breakage else "pristine")
            copy_project(source, root)
            if breakage and breakage.delete:
                (root / breakage.file).unlink()
            elif breakage and breakage.create:
                (root / breakage.file).parent.mkdir(parents=True, exist_ok=True)
                (root / breakage.file).write_text(breakage.new, encoding="utf-8")
            elif breakage:
                target = root / breakage.file
                text = target.read_text(encoding="utf-8")
                if breakage.old not in text:
                    raise AssertionError(f"self-test is stale: {breakage.file} no longer contains {breakage.old!r}")
                target.write_text(text.replace(breakage.old, breakage.new, 1), encoding="utf-8")
            return root

        jobs: list[tuple[str, Breakage | None, Path]] = [("pristine copy", None, prepare(0, None))]
        for index, breakage in enumerate(BREAKAGES, 1):
            jobs.append((breakage.name, breakage, prepare(index, breakage)))
        # One checkov run over every copy: its start-up (about 3 s) dominates a run this small.
        shared = run_checkov(checkov, base, base / "pristine" / "infra" / "checkov")
        reports = [run_gate(root, checkov, shared) for _, _, root in jobs]
        for (name, breakage, _), report in zip(jobs, reports):
            if breakage is None:
                good = report.passed
                verdict = "passes" if good else "FAILS (it must pass)"
            else:
                hit = any(breakage.expect in failure for failure in report.failures)
                good = not report.passed and hit
                if good:
                    verdict = f"fails as it must ({breakage.expect})"
                elif report.passed:
                    verdict = "PASSES (it must fail)"
                else:
                    verdict = f"fails, but not with {breakage.expect!r}"
            print(f"  {'ok  ' if good else 'FAIL'} {name}: {verdict}")
            if not good or verbose:
                print_report(report, True)
            ok = ok and good
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description="tagfence's offline infrastructure gate (Bicep syntax, wiring, checkov, triggers, hooks)")
    parser.add_argument("--root", type=Path, default=ROOT, help="repository root (default: this script's repository)")
    parser.add_argument("--self-test", action="store_true", help="check that the gate passes on a copy and fails on deliberately broken copies")
    parser.add_argument("--checkov", default=None, help="checkov executable (default: the one next to this Python, else on PATH)")
    parser.add_argument("--verbose", action="store_true", help="print every stage's notes")
    args = parser.parse_args()

    checkov = args.checkov or str(Path(sys.executable).parent / "checkov")
    if not Path(checkov).exists():
        checkov = shutil.which("checkov") or ""
    if not checkov:
        print("infra_gate: checkov not found; run scripts/infra_gate.sh, which installs it in .venv-infra/", file=sys.stderr)
        return 2
    root = args.root.resolve()
    started = time.monotonic()
    if args.self_test:
        ok = self_test(root, checkov, args.verbose)
        print(f"infra gate self-test: {'passed' if ok else 'FAILED'} in {time.monotonic() - started:.1f}s")
        return 0 if ok else 1
    report = run_gate(root, checkov)
    print(f"infra gate: {root}")
    print_report(report, args.verbose)
    print(f"infra gate: {'passed' if report.passed else f'FAILED ({len(report.failures)} problems)'} in {time.monotonic() - started:.1f}s")
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
