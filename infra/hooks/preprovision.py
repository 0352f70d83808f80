#!/usr/bin/env python3
"""azd preprovision hook: which vaults tagfence manages, asked for and checked before provisioning.

A tagfence deployment must select vaults: by listing them (TAGFENCE_VAULTS) or by naming where to
discover tagged ones (TAGFENCE_DISCOVER_SUBSCRIPTIONS, TAGFENCE_DISCOVER_MANAGEMENT_GROUPS). Without
either, the Function App would start with nothing to do and say so only at its first timer run, a
week later. This hook runs before azd provisions (azure.yaml), and:

- with nothing selected, on a terminal, asks for the vault ids (or, left empty, for subscriptions
  to discover vaults in), checks the answer and stores it with `azd env set`; with no terminal
  (as in CI), refuses and says what to set (azd does not tell a hook about `--no-prompt`: on a
  terminal it asks even then);
- with a selection, checks its shape and refuses, one line per problem, naming the setting:
  a vault id other than /subscriptions/<GUID>/resourceGroups/<name>/providers/Microsoft.KeyVault/vaults/<name>
  (the Bicep takes the subscription, group and name from their positions; tagfence also wants a
  GUID and a Key Vault name of 3-24 letters, digits or hyphens), a vault listed twice, a
  discovery subscription that is not a GUID, a management group name tagfence would refuse, a
  role scope (VAULT_ROLE_RESOURCE_GROUPS, VAULT_ROLE_SUBSCRIPTIONS) of the wrong shape;
- `TAGFENCE_VAULTS=none` lists no vault (infra/main.bicep requires the parameter, so that azd and
  `az deployment` ask for it; `none` is the explicit "discovery selects them"): it needs a
  discovery scope or a configuration file (TAGFENCE_CONFIG). With a discovery scope and
  TAGFENCE_VAULTS unset, the hook sets it to `none` itself.

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
from typing import List, Optional, Tuple

PREFIX = "tagfence preprovision:"
VAULT_SHAPE = "/subscriptions/<GUID>/resourceGroups/<name>/providers/Microsoft.KeyVault/vaults/<name>"
GROUP_SHAPE = "/subscriptions/<GUID>/resourceGroups/<name>"
GUID = r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
GUID_RE = re.compile(f"^{GUID}$")
# Fixed segments compare without case in ARM (tagfence matches them so too); names are as given.
VAULT_RE = re.compile(
    r"^/subscriptions/(?P<sub>[^/]*)/resourceGroups/(?P<group>[^/]*)"
    r"/providers/Microsoft\.KeyVault/vaults/(?P<name>[^/]*)$",
    re.IGNORECASE,
)
GROUP_RE = re.compile(r"^/subscriptions/(?P<sub>[^/]*)/resourceGroups/(?P<group>[^/]*)$", re.IGNORECASE)
VAULT_NAME_RE = re.compile(r"^[A-Za-z0-9-]{3,24}$")
# Resource group names: 1-90 letters, digits, underscores, hyphens, periods, parentheses; not
# ending in a period (Microsoft Learn, "Naming rules and restrictions for Azure resources").
GROUP_NAME_RE = re.compile(r"^[\w\-.()]{0,89}[\w\-()]$")
MANAGEMENT_GROUP_RE = re.compile(r"^[A-Za-z0-9\-_.()]{1,90}$")
NONE = "none"


def entries(value: str) -> List[str]:
    """A comma-separated setting's entries, trimmed, empty ones dropped (as the Bicep reads it)."""
    return [entry.strip() for entry in value.split(",") if entry.strip()]


def vault_problem(entry: str) -> Optional[str]:
    """Why `entry` is not a Key Vault resource id the deployment can use, or None."""
    match = VAULT_RE.match(entry)
    if not match:
        if entry.lower() == NONE:
            return "none (no vault listed) cannot stand beside vault ids"
        if not entry.startswith("/"):
            return "it does not start with /subscriptions/ (a vault name alone is not enough)"
        if entry.endswith("/"):
            return "it ends with / (the Bicep takes the vault name from the last segment)"
        segments = entry.strip("/").split("/")
        if len(segments) != 8:
            return f"it has {len(segments)} segments, not 8"
        return "its fixed segments are not subscriptions, resourceGroups, providers, Microsoft.KeyVault, vaults"
    if not GUID_RE.match(match["sub"]):
        return f"the subscription '{match['sub']}' is not a GUID"
    if not GROUP_NAME_RE.match(match["group"]):
        return f"the resource group '{match['group']}' is not a resource group name"
    if not VAULT_NAME_RE.match(match["name"]):
        return f"the vault name '{match['name']}' is not 3-24 letters, digits or hyphens"
    return None


def check(env: dict) -> Tuple[List[str], List[str], bool]:
    """Checks the selection in `env`: (problems, notes, whether TAGFENCE_VAULTS should become
    'none'). A problem is one line naming the setting as the user wrote it."""
    problems: List[str] = []
    notes: List[str] = []
    vaults_text = env.get("TAGFENCE_VAULTS", "").strip()
    listed = entries(vaults_text)
    explicit_none = [e.lower() for e in listed] == [NONE]
    seen: dict = {}
    if not explicit_none:
        for entry in listed:
            problem = vault_problem(entry)
            if problem:
                problems.append(f"TAGFENCE_VAULTS entry '{entry}': {problem}; expected {VAULT_SHAPE}")
            elif entry.lower() in seen:
                problems.append(f"TAGFENCE_VAULTS entry '{entry}': listed twice (also as '{seen[entry.lower()]}')")
            else:
                seen[entry.lower()] = entry
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
    config = env.get("TAGFENCE_CONFIG", "").strip()
    set_none = False
    if explicit_none and not discovers and not config:
        problems.append(
            "TAGFENCE_VAULTS=none lists no vault, and no discovery scope selects any; set "
            "TAGFENCE_DISCOVER_SUBSCRIPTIONS or TAGFENCE_DISCOVER_MANAGEMENT_GROUPS, or list vault ids"
        )
    elif not listed and discovers:
        set_none = True
        notes.append("TAGFENCE_VAULTS is not set: no vault is listed, discovery selects them (TAGFENCE_VAULTS=none)")
    elif explicit_none and config and not discovers:
        notes.append(f"TAGFENCE_VAULTS=none: the configuration file {config} must list the vaults (not checked here)")
    return problems, notes, set_none


def listed_vaults(env: dict) -> List[str]:
    """The vault ids TAGFENCE_VAULTS lists (none for `none`)."""
    listed = entries(env.get("TAGFENCE_VAULTS", ""))
    return [] if [e.lower() for e in listed] == [NONE] else listed


def discovery_scopes(env: dict) -> List[str]:
    return entries(env.get("TAGFENCE_DISCOVER_SUBSCRIPTIONS", "")) + entries(
        env.get("TAGFENCE_DISCOVER_MANAGEMENT_GROUPS", "")
    )


def selected_nothing(env: dict) -> bool:
    return not entries(env.get("TAGFENCE_VAULTS", "")) and not discovery_scopes(env)


HOW_TO_SET = f"""\
{PREFIX} tagfence needs vaults to manage: list them, or name where to discover tagged ones.
  azd env set TAGFENCE_VAULTS "<id>,<id>"      each id {VAULT_SHAPE}
                                               (az keyvault list --query "[].id" -o tsv)
  or, to manage every vault tagged 'tagfence' in some subscriptions:
  azd env set TAGFENCE_DISCOVER_SUBSCRIPTIONS "<GUID>,<GUID>"
  (management groups: TAGFENCE_DISCOVER_MANAGEMENT_GROUPS, with TAGFENCE_VAULTS none; docs/deploy.md)
then run azd up (or azd provision) again."""


def ask(prompt: str) -> Optional[str]:
    try:
        return input(prompt).strip()
    except EOFError:
        return None


def prompt_selection() -> Optional[dict]:
    """Asks for the vault ids, or else the discovery subscriptions, until the answer is usable;
    the settings to store, or None when the input ends."""
    print(f"{PREFIX} which Key Vaults should tagfence manage?")
    print(f"  Enter their resource ids, comma-separated, each {VAULT_SHAPE}")
    print('  (az keyvault list --query "[].id" -o tsv lists those you can see),')
    print("  or press Enter to discover the vaults tagged 'tagfence' in subscriptions instead.")
    while True:
        answer = ask("Key Vault resource ids: ")
        if answer is None:
            return None
        if answer:
            problems, _, _ = check({"TAGFENCE_VAULTS": answer})
            if not problems:
                return {"TAGFENCE_VAULTS": ",".join(entries(answer))}
        else:
            answer = ask("Subscription ids (GUIDs) to discover tagged vaults in: ")
            if answer is None:
                return None
            if not answer:
                print(f"{PREFIX} one of the two is required: vault ids, or subscriptions to discover vaults in")
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
            print(f"{PREFIX} no vaults selected: TAGFENCE_VAULTS, TAGFENCE_DISCOVER_SUBSCRIPTIONS and "
                  "TAGFENCE_DISCOVER_MANAGEMENT_GROUPS are all empty", file=sys.stderr)
            print(HOW_TO_SET, file=sys.stderr)
            return 1
        chosen = prompt_selection()
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
    print(f"{PREFIX} {len(listed_vaults(env))} vault(s) listed, {len(discovery_scopes(env))} discovery scope(s); provisioning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
