#!/usr/bin/env python3
"""azd preprovision hook: which resources tagfence manages, asked for and checked before provisioning.

A tagfence deployment must select the firewalled resources it manages (Key Vaults, Storage accounts,
Container Registries): by listing them (TAGFENCE_RESOURCES, or TAGFENCE_VAULTS, its older name,
which takes every kind too) or by naming where to discover tagged ones
(TAGFENCE_DISCOVER_SUBSCRIPTIONS, TAGFENCE_DISCOVER_MANAGEMENT_GROUPS). Without either, the
Function App would start with nothing to do and say so only at its first timer run, a week later.
This hook runs before azd provisions (azure.yaml), and:

- with nothing selected, on a terminal, asks for the resource ids (or, left empty, for
  subscriptions to discover resources in), checks the answer and stores it with `azd env set`
  (the ids in TAGFENCE_VAULTS); with no terminal (as in CI), refuses and says what to set (azd
  does not tell a hook about `--no-prompt`: on a terminal it asks even then);
- with a selection, checks its shape and refuses, one line per problem, naming the setting:
  an id other than /subscriptions/<GUID>/resourceGroups/<name>/providers/<type>/<name> with
  <type> Microsoft.KeyVault/vaults, Microsoft.Storage/storageAccounts or
  Microsoft.ContainerRegistry/registries (the Bicep takes the subscription, group, type and name
  from their positions; tagfence also wants a GUID and a name its kind allows: a vault 3-24
  letters, digits or hyphens, a storage account 3-24 lower-case letters or digits, a registry 5-50
  letters or digits), an id listed twice (in either list, any case), an id whose kind TAGFENCE_KINDS
  leaves out (the Bicep gives the role a kind's actions only when `enabledKinds`, from
  TAGFENCE_KINDS, names it, so the resource could not be written), a TAGFENCE_KINDS entry that is
  no kind, a discovery subscription that is not a GUID, a management group name tagfence would
  refuse, a role scope (VAULT_ROLE_RESOURCE_GROUPS, VAULT_ROLE_SUBSCRIPTIONS) of the wrong shape;
- `TAGFENCE_VAULTS=none` lists nothing there (infra/main.bicep requires the parameter, so that azd
  and `az deployment` ask for it; `none` is the explicit "another setting selects them"): it needs
  ids in TAGFENCE_RESOURCES, a discovery scope or a configuration file (TAGFENCE_CONFIG). With ids
  in TAGFENCE_RESOURCES or a discovery scope and TAGFENCE_VAULTS unset, the hook sets it to `none`
  itself.

Why a hook and not only azd's own prompt: azd runs the preprovision hook before it resolves the
Bicep parameters (and prompts for those without a value), so only a hook can check the shape before
anything is deployed, and a parameter prompt cannot say "this one or that one". Hooks, their
per-OS entries and `interactive` are described on Microsoft Learn ("Customize your Azure Developer
CLI workflows using command and event hooks"); that azd passes the environment's values to a hook
and reloads the environment after it (so the `azd env set` here reaches main.parameters.json) was
read in azd's source (Azure/azure-dev, cli/azd/pkg/ext/hooks_runner.go, internal/cmd/up_graph.go).

Python rather than a shell script so that one implementation serves azure.yaml's `posix` (sh) and
`windows` (pwsh) entries alike; Python 3 is already needed to build the package.

Usage: infra/hooks/preprovision.py   (azd runs it; by hand, with the same variables set)
Exit status: 0 the selection is usable, 1 refused (nothing was provisioned).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from typing import List, NamedTuple, Optional, Tuple

PREFIX = "tagfence preprovision:"


class Kind(NamedTuple):
    """A kind of firewalled resource tagfence manages (src/core/kind.rs, src/azure/mod.rs)."""

    name: str  # as TAGFENCE_KINDS names it
    resource_type: str  # <namespace>/<type> in its ids
    noun: str
    name_re: "re.Pattern[str]"  # the names the REST specs allow (tagfence checks the same)
    name_rule: str


KINDS = [
    Kind("key_vault", "Microsoft.KeyVault/vaults", "vault", re.compile(r"^[A-Za-z0-9-]{3,24}$"),
         "3-24 letters, digits or hyphens"),
    Kind("storage_account", "Microsoft.Storage/storageAccounts", "storage account", re.compile(r"^[a-z0-9]{3,24}$"),
         "3-24 lower-case letters or digits"),
    Kind("container_registry", "Microsoft.ContainerRegistry/registries", "registry", re.compile(r"^[A-Za-z0-9]{5,50}$"),
         "5-50 letters or digits"),
]
TYPES_TEXT = ", ".join(kind.resource_type for kind in KINDS[:-1]) + " or " + KINDS[-1].resource_type
KIND_NAMES_TEXT = ", ".join(kind.name for kind in KINDS[:-1]) + " or " + KINDS[-1].name
RESOURCE_SHAPE = f"/subscriptions/<GUID>/resourceGroups/<name>/providers/<type>/<name>, <type> being {TYPES_TEXT}"
VAULT_SHAPE = "/subscriptions/<GUID>/resourceGroups/<name>/providers/Microsoft.KeyVault/vaults/<name>"
GROUP_SHAPE = "/subscriptions/<GUID>/resourceGroups/<name>"
GUID = r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
GUID_RE = re.compile(f"^{GUID}$")
# Fixed segments and the type compare without case in ARM (tagfence matches them so too); names
# are as given.
RESOURCE_RE = re.compile(
    r"^/subscriptions/(?P<sub>[^/]*)/resourceGroups/(?P<group>[^/]*)"
    r"/providers/(?P<namespace>[^/]*)/(?P<type>[^/]*)/(?P<name>[^/]*)$",
    re.IGNORECASE,
)
GROUP_RE = re.compile(r"^/subscriptions/(?P<sub>[^/]*)/resourceGroups/(?P<group>[^/]*)$", re.IGNORECASE)
# Resource group names: 1-90 letters, digits, underscores, hyphens, periods, parentheses; not
# ending in a period (Microsoft Learn, "Naming rules and restrictions for Azure resources").
GROUP_NAME_RE = re.compile(r"^[\w\-.()]{0,89}[\w\-()]$")
MANAGEMENT_GROUP_RE = re.compile(r"^[A-Za-z0-9\-_.()]{1,90}$")
NONE = "none"


def entries(value: str) -> List[str]:
    """A comma-separated setting's entries, trimmed, empty ones dropped (as the Bicep reads it)."""
    return [entry.strip() for entry in value.split(",") if entry.strip()]


def kind_of(entry: str) -> Optional[Kind]:
    """The kind of a well-formed resource id, by its provider type (any case)."""
    match = RESOURCE_RE.match(entry)
    if not match:
        return None
    resource_type = f"{match['namespace']}/{match['type']}".lower()
    return next((kind for kind in KINDS if kind.resource_type.lower() == resource_type), None)


def resource_problem(entry: str, setting: str) -> Optional[str]:
    """Why `entry` is not a resource id of a kind tagfence manages that the deployment can use,
    or None."""
    match = RESOURCE_RE.match(entry)
    if not match:
        if entry.lower() == NONE:
            if setting == "TAGFENCE_VAULTS":
                return "none (nothing listed) cannot stand beside resource ids"
            return "none is only for TAGFENCE_VAULTS; leave TAGFENCE_RESOURCES empty to list nothing"
        if not entry.startswith("/"):
            return "it does not start with /subscriptions/ (a name alone is not enough)"
        if entry.endswith("/"):
            return "it ends with / (the Bicep takes the name from the last segment)"
        segments = entry.strip("/").split("/")
        if len(segments) != 8:
            return f"it has {len(segments)} segments, not 8"
        return "its fixed segments are not subscriptions, resourceGroups, providers"
    kind = kind_of(entry)
    if kind is None:
        return f"its type {match['namespace']}/{match['type']} is not one tagfence manages"
    if not GUID_RE.match(match["sub"]):
        return f"the subscription '{match['sub']}' is not a GUID"
    if not GROUP_NAME_RE.match(match["group"]):
        return f"the resource group '{match['group']}' is not a resource group name"
    if not kind.name_re.match(match["name"]):
        return f"the {kind.noun} name '{match['name']}' is not {kind.name_rule}"
    return None


def enabled_kinds(env: dict) -> Tuple[List[Kind], List[str]]:
    """The kinds TAGFENCE_KINDS names, as tagfence and the Bicep read it (any case, - for _,
    blanks dropped; none at all: every kind), and its entries that name no kind."""
    named = entries(env.get("TAGFENCE_KINDS", ""))
    found: List[Kind] = []
    unknown: List[str] = []
    for entry in named:
        kind = next((k for k in KINDS if k.name == entry.lower().replace("-", "_")), None)
        if kind is None:
            unknown.append(entry)
        elif kind not in found:
            found.append(kind)
    return (found if named else list(KINDS)), unknown


def check(env: dict) -> Tuple[List[str], List[str], bool]:
    """Checks the selection in `env`: (problems, notes, whether TAGFENCE_VAULTS should become
    'none'). A problem is one line naming the setting as the user wrote it."""
    problems: List[str] = []
    notes: List[str] = []
    vaults_text = env.get("TAGFENCE_VAULTS", "").strip()
    listed = entries(vaults_text)
    explicit_none = [e.lower() for e in listed] == [NONE]
    kinds, unknown_kinds = enabled_kinds(env)
    for entry in unknown_kinds:
        problems.append(f"TAGFENCE_KINDS entry '{entry}': not a kind; expected {KIND_NAMES_TEXT} (any case; - for _)")
    seen: dict = {}
    for setting in ("TAGFENCE_VAULTS", "TAGFENCE_RESOURCES"):
        if setting == "TAGFENCE_VAULTS" and explicit_none:
            continue
        for entry in entries(env.get(setting, "")):
            problem = resource_problem(entry, setting)
            kind = kind_of(entry)
            if problem:
                problems.append(f"{setting} entry '{entry}': {problem}; expected {RESOURCE_SHAPE}")
            elif entry.lower() in seen:
                first, where = seen[entry.lower()]
                problems.append(f"{setting} entry '{entry}': listed twice (also as '{first}' in {where})")
            elif kind is not None and kind not in kinds and not unknown_kinds:
                problems.append(
                    f"{setting} entry '{entry}': a {kind.noun}, but TAGFENCE_KINDS ({env.get('TAGFENCE_KINDS', '').strip()}) "
                    f"leaves out {kind.name}, so the role would not allow writing it; add {kind.name} to TAGFENCE_KINDS"
                )
            else:
                seen[entry.lower()] = (entry, setting)
    subscriptions = entries(env.get("TAGFENCE_DISCOVER_SUBSCRIPTIONS", ""))
    for entry in subscriptions:
        if not GUID_RE.match(entry):
            problems.append(
                f"TAGFENCE_DISCOVER_SUBSCRIPTIONS entry '{entry}': not a subscription id; expected a GUID "
                "(00000000-0000-0000-0000-000000000000; az account list --query \"[].id\" -o tsv)"
            )
    groups = entries(env.get("TAGFENCE_DISCOVER_MANAGEMENT_GROUPS", ""))
    for entry in groups:
        if not MANAGEMENT_GROUP_RE.match(entry):
            problems.append(
                f"TAGFENCE_DISCOVER_MANAGEMENT_GROUPS entry '{entry}': not a management group id; "
                "expected up to 90 letters, digits, hyphens, underscores, periods or parentheses"
            )
    for entry in entries(env.get("VAULT_ROLE_RESOURCE_GROUPS", "")):
        match = GROUP_RE.match(entry)
        if not match or not GUID_RE.match(match["sub"]) or not GROUP_NAME_RE.match(match["group"]):
            problems.append(f"VAULT_ROLE_RESOURCE_GROUPS entry '{entry}': expected {GROUP_SHAPE}")
    for entry in entries(env.get("VAULT_ROLE_SUBSCRIPTIONS", "")):
        bare = entry[len("/subscriptions/"):] if entry.lower().startswith("/subscriptions/") else entry
        if not GUID_RE.match(bare):
            problems.append(f"VAULT_ROLE_SUBSCRIPTIONS entry '{entry}': not a subscription id; expected a GUID")

    discovers = bool(subscriptions or groups)
    resources = entries(env.get("TAGFENCE_RESOURCES", ""))
    config = env.get("TAGFENCE_CONFIG", "").strip()
    set_none = False
    if explicit_none and not discovers and not resources and not config:
        problems.append(
            "TAGFENCE_VAULTS=none lists nothing, and neither TAGFENCE_RESOURCES nor a discovery scope selects "
            "anything; list resource ids in TAGFENCE_RESOURCES, or set TAGFENCE_DISCOVER_SUBSCRIPTIONS or "
            "TAGFENCE_DISCOVER_MANAGEMENT_GROUPS"
        )
    elif not listed and (discovers or resources):
        set_none = True
        by = "TAGFENCE_RESOURCES lists them" if resources else "discovery selects them"
        if resources and discovers:
            by = "TAGFENCE_RESOURCES and discovery select them"
        notes.append(f"TAGFENCE_VAULTS is not set: nothing is listed there, {by} (TAGFENCE_VAULTS=none)")
    elif explicit_none and config and not discovers and not resources:
        notes.append(f"TAGFENCE_VAULTS=none: the configuration file {config} must list the resources (not checked here)")
    return problems, notes, set_none


def listed_resources(env: dict) -> List[str]:
    """The ids TAGFENCE_VAULTS (none for `none`) and TAGFENCE_RESOURCES list."""
    listed = entries(env.get("TAGFENCE_VAULTS", ""))
    listed = [] if [e.lower() for e in listed] == [NONE] else listed
    return listed + entries(env.get("TAGFENCE_RESOURCES", ""))


def discovery_scopes(env: dict) -> List[str]:
    return entries(env.get("TAGFENCE_DISCOVER_SUBSCRIPTIONS", "")) + entries(
        env.get("TAGFENCE_DISCOVER_MANAGEMENT_GROUPS", "")
    )


def selected_nothing(env: dict) -> bool:
    return (not entries(env.get("TAGFENCE_VAULTS", "")) and not entries(env.get("TAGFENCE_RESOURCES", ""))
            and not discovery_scopes(env))


HOW_TO_SET = f"""\
{PREFIX} tagfence needs resources to manage: list them, or name where to discover tagged ones.
  azd env set TAGFENCE_RESOURCES "<id>,<id>"   each id /subscriptions/<GUID>/resourceGroups/<name>/providers/<type>/<name>,
                                               <type> being {TYPES_TEXT}
                                               (e.g. {VAULT_SHAPE};
                                               az keyvault list / az storage account list / az acr list --query "[].id" -o tsv)
  (TAGFENCE_VAULTS, its older name, takes the same ids)
  or, to manage every resource tagged 'tagfence' in some subscriptions:
  azd env set TAGFENCE_DISCOVER_SUBSCRIPTIONS "<GUID>,<GUID>"
  (management groups: TAGFENCE_DISCOVER_MANAGEMENT_GROUPS, with TAGFENCE_VAULTS none; docs/deploy.md)
  TAGFENCE_KINDS ({KIND_NAMES_TEXT}; default all) says which kinds the role may write.
then run azd up (or azd provision) again."""


def ask(prompt: str) -> Optional[str]:
    try:
        return input(prompt).strip()
    except EOFError:
        return None


def prompt_selection(env: dict) -> Optional[dict]:
    """Asks for the resource ids, or else the discovery subscriptions, until the answer is usable
    (with the TAGFENCE_KINDS of `env`); the settings to store, or None when the input ends."""
    print(f"{PREFIX} which Key Vaults, Storage accounts or Container Registries should tagfence manage?")
    print(f"  Enter their resource ids, comma-separated, each {RESOURCE_SHAPE}")
    print('  (az keyvault list, az storage account list or az acr list --query "[].id" -o tsv lists those you can see),')
    print("  or press Enter to discover the resources tagged 'tagfence' in subscriptions instead.")
    while True:
        answer = ask("Resource ids: ")
        if answer is None:
            return None
        if answer:
            kinds_setting = {"TAGFENCE_KINDS": env["TAGFENCE_KINDS"]} if "TAGFENCE_KINDS" in env else {}
            problems, _, _ = check({"TAGFENCE_VAULTS": answer, **kinds_setting})
            if not problems:
                return {"TAGFENCE_VAULTS": ",".join(entries(answer))}
        else:
            answer = ask("Subscription ids (GUIDs) to discover tagged resources in: ")
            if answer is None:
                return None
            if not answer:
                print(f"{PREFIX} one of the two is required: resource ids, or subscriptions to discover resources in")
                continue
            problems, _, _ = check({"TAGFENCE_DISCOVER_SUBSCRIPTIONS": answer})
            if not problems:
                return {"TAGFENCE_VAULTS": NONE, "TAGFENCE_DISCOVER_SUBSCRIPTIONS": ",".join(entries(answer))}
        for problem in problems:
            print(f"{PREFIX} {problem}")


def store(settings: dict) -> bool:
    """`azd env set` for each setting; False (with what to run) when azd is not at hand."""
    azd = shutil.which("azd")
    for name, value in settings.items():
        if azd is None or subprocess.run([azd, "env", "set", name, value]).returncode != 0:
            print(f"{PREFIX} could not store {name} with azd; run: azd env set {name} \"{value}\"", file=sys.stderr)
            return False
        print(f"{PREFIX} {name}={value} stored in the azd environment")
    return True


def main() -> int:
    env = dict(os.environ)
    if selected_nothing(env):
        if not sys.stdin.isatty():
            print(f"{PREFIX} nothing selected: TAGFENCE_RESOURCES, TAGFENCE_VAULTS, TAGFENCE_DISCOVER_SUBSCRIPTIONS "
                  "and TAGFENCE_DISCOVER_MANAGEMENT_GROUPS are all empty", file=sys.stderr)
            print(HOW_TO_SET, file=sys.stderr)
            return 1
        chosen = prompt_selection(env)
        if chosen is None:
            print(HOW_TO_SET, file=sys.stderr)
            return 1
        if not store(chosen):
            return 1
        env.update(chosen)
    problems, notes, set_none = check(env)
    for problem in problems:
        print(f"{PREFIX} {problem}", file=sys.stderr)
    if problems:
        print(f"{PREFIX} nothing was provisioned; fix the setting(s) above with azd env set, then run azd up again",
              file=sys.stderr)
        return 1
    for note in notes:
        print(f"{PREFIX} {note}")
    if set_none and not store({"TAGFENCE_VAULTS": NONE}):
        return 1
    listed = listed_resources(env)
    counts = ", ".join(f"{sum(1 for e in listed if kind_of(e) == kind)} {kind.noun}(s)" for kind in KINDS)
    kinds, _ = enabled_kinds(env)
    print(f"{PREFIX} {len(listed)} resource(s) listed ({counts}), {len(discovery_scopes(env))} discovery scope(s); "
          f"the role may write {', '.join(kind.name for kind in kinds)}; provisioning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
