#!/usr/bin/env bash
# azd postdeploy hook: subscribe function-eventgrid to the subscription's writes of the resources
# tagfence manages (Key Vaults, Storage accounts, Container Registries).
#
# The event subscription cannot be in Bicep: its endpoint carries the Event Grid system key of the
# Functions host, which exists only once the code is deployed and the host has started. This runs
# after `azd deploy` (and `azd up`), with the outputs of infra/main.bicep in the environment. It is
# idempotent (create is a PUT) and can be run by hand with the same variables (docs/deploy.md).
#
# Filter: event type Microsoft.Resources.ResourceWriteSuccess and data.operationName one of the
# write operations of the kinds TAGFENCE_KINDS names (read as tagfence reads it: comma-separated,
# any case, - for _, blanks dropped; none at all: every kind): Microsoft.KeyVault/vaults/write,
# Microsoft.Storage/storageAccounts/write, Microsoft.ContainerRegistry/registries/write. So
# tagfence only hears about writes of those kinds (its own PATCHes included; a re-plan of those
# finds nothing to do). The subscription keeps its name (tagfence-vault-writes) from when it carried
# vault writes only, so that rerunning this updates it in place.
#
# Destination (EVENTGRID_DESTINATION):
#   webhook (default)  https://<host>/runtime/webhooks/eventgrid?functionName=function-eventgrid&code=<system key>
#                      The system key is read with `az functionapp keys list`; its name is
#                      EVENTGRID_SYSTEM_KEY_NAME (default eventgrid_extension, UNVERIFIED).
#   azurefunction      the function's resource id; Event Grid fetches the key itself (no key here).
#                      Whether Event Grid accepts a custom-handler function as such a destination
#                      is UNVERIFIED.
set -euo pipefail

: "${AZURE_RESOURCE_GROUP:?AZURE_RESOURCE_GROUP is not set (an output of infra/main.bicep)}"
: "${AZURE_FUNCTION_APP_NAME:?AZURE_FUNCTION_APP_NAME is not set (an output of infra/main.bicep)}"

topic="${EVENTGRID_SYSTEM_TOPIC_NAME:-}"
topic_group="${EVENTGRID_SYSTEM_TOPIC_RESOURCE_GROUP:-$AZURE_RESOURCE_GROUP}"
subscription_name="${EVENTGRID_SUBSCRIPTION_NAME:-tagfence-vault-writes}"
destination="${EVENTGRID_DESTINATION:-webhook}"
key_name="${EVENTGRID_SYSTEM_KEY_NAME:-eventgrid_extension}"
function_name="function-eventgrid"

# The write operations of the enabled kinds (src/azure/kinds.rs, write_operation).
operations=()
IFS=',' read -r -a kind_entries <<<"${TAGFENCE_KINDS:-}"
for entry in "${kind_entries[@]+"${kind_entries[@]}"}"; do
  kind="$(printf '%s' "$entry" | tr -d '[:space:]' | tr '[:upper:]-' '[:lower:]_')"
  case "$kind" in
    "") continue ;;
    key_vault) operation="Microsoft.KeyVault/vaults/write" ;;
    storage_account) operation="Microsoft.Storage/storageAccounts/write" ;;
    container_registry) operation="Microsoft.ContainerRegistry/registries/write" ;;
    *)
      echo "tagfence postdeploy: TAGFENCE_KINDS entry '${entry}' is not a kind; expected key_vault, storage_account or container_registry" >&2
      exit 1
      ;;
  esac
  case " ${operations[*]+"${operations[*]}"} " in
    *" ${operation} "*) ;;
    *) operations+=("$operation") ;;
  esac
done
if [ "${#operations[@]}" -eq 0 ]; then
  operations=(Microsoft.KeyVault/vaults/write Microsoft.Storage/storageAccounts/write Microsoft.ContainerRegistry/registries/write)
fi

if [ -z "$topic" ]; then
  echo "tagfence postdeploy: no Event Grid system topic (EVENTGRID_SYSTEM_TOPIC=off); the Event Grid hook is not wired"
  exit 0
fi

command -v az >/dev/null 2>&1 || {
  echo "tagfence postdeploy: the Azure CLI (az) is needed to create the Event Grid subscription" >&2
  exit 1
}

# azd sets AZURE_SUBSCRIPTION_ID; by hand, the az CLI's current subscription is used without it.
sub="${AZURE_SUBSCRIPTION_ID:-}"

case "$destination" in
  webhook)
    host="${AZURE_FUNCTION_APP_HOSTNAME:-}"
    if [ -z "$host" ]; then
      host="$(az functionapp show ${sub:+--subscription "$sub"} -g "$AZURE_RESOURCE_GROUP" -n "$AZURE_FUNCTION_APP_NAME" --query defaultHostName -o tsv)"
    fi
    # The host creates the key when the Event Grid extension first loads, shortly after a deploy.
    key=""
    for attempt in $(seq 1 20); do
      key="$(az functionapp keys list ${sub:+--subscription "$sub"} -g "$AZURE_RESOURCE_GROUP" -n "$AZURE_FUNCTION_APP_NAME" \
        --query "systemKeys.${key_name}" -o tsv 2>/dev/null || true)"
      [ -n "$key" ] && break
      echo "tagfence postdeploy: waiting for the host's '${key_name}' system key (attempt ${attempt}/20)"
      sleep 15
    done
    if [ -z "$key" ]; then
      echo "tagfence postdeploy: no system key '${key_name}' on ${AZURE_FUNCTION_APP_NAME}; list them with" >&2
      echo "  az functionapp keys list -g ${AZURE_RESOURCE_GROUP} -n ${AZURE_FUNCTION_APP_NAME} --query systemKeys" >&2
      echo "and rerun with EVENTGRID_SYSTEM_KEY_NAME=<name>, or EVENTGRID_DESTINATION=azurefunction" >&2
      exit 1
    fi
    endpoint_type="webhook"
    endpoint="https://${host}/runtime/webhooks/eventgrid?functionName=${function_name}&code=${key}"
    ;;
  azurefunction)
    app_id="${AZURE_FUNCTION_APP_ID:-$(az functionapp show ${sub:+--subscription "$sub"} -g "$AZURE_RESOURCE_GROUP" -n "$AZURE_FUNCTION_APP_NAME" --query id -o tsv)}"
    endpoint_type="azurefunction"
    endpoint="${app_id}/functions/${function_name}"
    ;;
  *)
    echo "tagfence postdeploy: EVENTGRID_DESTINATION must be webhook or azurefunction, not '${destination}'" >&2
    exit 1
    ;;
esac

echo "tagfence postdeploy: subscribing ${function_name} (${endpoint_type}) to ${operations[*]} on system topic ${topic_group}/${topic}"
# The endpoint (with its key) is passed as an argument, never echoed.
az eventgrid system-topic event-subscription create ${sub:+--subscription "$sub"} \
  --name "$subscription_name" \
  --resource-group "$topic_group" \
  --system-topic-name "$topic" \
  --endpoint-type "$endpoint_type" \
  --endpoint "$endpoint" \
  --event-delivery-schema eventgridschema \
  --included-event-types Microsoft.Resources.ResourceWriteSuccess \
  --advanced-filter data.operationName StringIn "${operations[@]}" \
  --max-delivery-attempts 10 \
  --event-ttl 120 \
  --only-show-errors \
  --output none
echo "tagfence postdeploy: Event Grid subscription ${subscription_name} is in place"
