// tagfence: everything `azd up` provisions, at subscription scope.
//
// - a resource group with tagfence's own resources (app/resources.bicep): user-assigned identity,
//   storage (no shared key), Log Analytics + Application Insights (Entra auth only), a Flex
//   Consumption (FC1) Linux Function App running the `tagfence` custom handler, its app settings,
//   and an Event Grid system topic on this subscription;
// - a custom role holding only what tagfence uses: read and write of the kinds `enabledKinds`
//   names (Key Vaults, Storage accounts, Container Registries), and Service Tags read; assigned to
//   the identity on each listed resource (by its kind: rbac/vault.bicep, rbac/storage-account.bicep,
//   rbac/registry.bicep), resource group and subscription given below (rbac/*.bicep, one module
//   per scope so that every role assignment is a plain resource that offline checkers can read);
// - a second custom role (Service Tags read only), assigned at one subscription when the Service
//   Tags come from the Discovery API (`TAGFENCE_SOURCE=api`).
//
// The Event Grid *subscription* (system topic → function-eventgrid) needs the deployed function's
// system key, so it is created after deployment by infra/hooks/postdeploy.sh.
//
// String parameters that mirror a tagfence setting are passed to the app setting of the same name;
// an empty value means tagfence's own default (docs/configuration.md). Lists are comma-separated,
// as the app settings take them. Keep this file within what checkov's Bicep parser (pycep 0.5.1)
// reads: single-line ternaries only, no spread, no inline object types, no `[for … if]` loops, no
// `deployer()`. `scripts/infra_gate.sh` checks it.

targetScope = 'subscription'

// ---------------------------------------------------------------------------------------------
// Where
// ---------------------------------------------------------------------------------------------

@minLength(1)
@maxLength(64)
@description('azd environment name; names the resource group and seeds the resource names.')
param environmentName string

@minLength(1)
@description('Azure region of the resource group and of every regional resource (must offer Flex Consumption: az functionapp list-flexconsumption-locations).')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Resource group to create or reuse; empty: rg-<environmentName>.')
param resourceGroupName string = ''

// ---------------------------------------------------------------------------------------------
// Which resources tagfence manages, and where it may write
// ---------------------------------------------------------------------------------------------

// Required, with no default: azd asks for a parameter that has neither a default nor a value in
// main.parameters.json, and `az deployment` refuses to run without it. One of three selections is
// needed, listed ids (here or in listedResources) or a discovery scope, which a parameter cannot
// say: `none` is the explicit "nothing listed here" for a deployment that lists its resources in
// listedResources or discovers them. infra/hooks/preprovision.py (azd's preprovision hook) asks
// for it, sets it to `none` itself when another selection is given, and checks every id's shape
// before anything is deployed.
@minLength(1)
@description('TAGFENCE_VAULTS: the resources tagfence manages (the older name of TAGFENCE_RESOURCES, taking any kind), comma-separated resource ids /subscriptions/<GUID>/resourceGroups/<name>/providers/<type>/<name>, <type> being Microsoft.KeyVault/vaults, Microsoft.Storage/storageAccounts or Microsoft.ContainerRegistry/registries (az keyvault list --query "[].id" -o tsv); the firewall role is assigned on each. none: nothing listed here, listedResources, TAGFENCE_DISCOVER_SUBSCRIPTIONS or TAGFENCE_DISCOVER_MANAGEMENT_GROUPS selects them.')
param vaults string

@description('TAGFENCE_RESOURCES: firewalled resources tagfence manages, comma-separated resource ids of Key Vaults (Microsoft.KeyVault/vaults), Storage accounts (Microsoft.Storage/storageAccounts) or Container Registries (Microsoft.ContainerRegistry/registries); the firewall role is assigned on each. Managed together with the vaults parameter\'s ids.')
param listedResources string = ''

@description('Comma-separated resource group ids: the firewall role is assigned on each (every resource of an enabled kind in it, present and future). Does not add resources to TAGFENCE_RESOURCES.')
param vaultRoleResourceGroups string = ''

@description('Comma-separated subscription ids: the firewall role is assigned on each subscription (every resource of an enabled kind in it). Does not add resources to TAGFENCE_RESOURCES.')
param vaultRoleSubscriptions string = ''

// ---------------------------------------------------------------------------------------------
// tagfence settings ('' = tagfence's default; see docs/configuration.md)
// ---------------------------------------------------------------------------------------------

@description('TAGFENCE_SCHEDULE: NCRONTAB (six fields, UTC, Sunday = 0) of the timer; empty: every Wednesday 06:30 UTC.')
param schedule string = '0 30 6 * * 3'

@description('TAGFENCE_CONFIG: path of a TOML configuration file inside the deployed package.')
param configFile string = ''

@description('TAGFENCE_TAGS: comma-separated service tags to allow.')
param serviceTagNames string = 'AzureDevOps'

@description('TAGFENCE_STATIC_RULES: comma-separated literal public IPv4 rules (e.g. a self-hosted agent).')
param staticRules string = ''

@description('TAGFENCE_MAX_RULES: all IPv4 rules a vault may hold (default 1000).')
param maxRules string = ''

@description('TAGFENCE_FIT: exact or summarize (default exact).')
param fit string = ''

@description('TAGFENCE_ENVELOPE: comma-separated tags that extra addresses must lie in (with summarize).')
param envelope string = ''

@description('TAGFENCE_MAX_EXTRA_ADDRESSES: refuse a summarized fit admitting more extra addresses.')
param maxExtraAddresses string = ''

@description('TAGFENCE_MAX_REMOVE_FRACTION: refuse a plan removing more than this fraction (default 0.2).')
param maxRemoveFraction string = ''

@description('TAGFENCE_SLASH31: split or keep (default split).')
param slash31 string = ''

@description('TAGFENCE_PRUNE: also remove rules neither selected nor added by tagfence (default false).')
param prune string = ''

@description('TAGFENCE_ADOPT_EXISTING: claim the rules already on a vault that equal desired rules, so that tagfence removes them when the range is retired (default false).')
param adoptExisting string = ''

@description('TAGFENCE_INIT_FIREWALL: initialise the firewall of a vault that has none configured (Allow, AzureServices bypass, the desired rules) instead of refusing it (default false).')
param initFirewall string = ''

@description('TAGFENCE_ACCEPT_MISSING_RULES: trust a vault read lacking more than half of the rules tagfence added (default false; for one run, not to leave on).')
param acceptMissingRules string = ''

@description('TAGFENCE_ALLOW_TAG_SHRINK: comma-separated selected tags (* for every tag) allowed to empty or to shrink more than TAGFENCE_MAX_TAG_SHRINK.')
param allowTagShrink string = ''

@description('TAGFENCE_MAX_TAG_SHRINK: refuse the vaults of a selected tag that lost more than this fraction of its IPv4 prefixes (default 0.5).')
param maxTagShrink string = ''

@description('TAGFENCE_GRANT_PRINCIPALS: comma-separated Microsoft Entra object ids or application (client) ids (GUIDs) allowed to grant their own IP on the vaults for a while (POST /api/grant); empty: nobody may.')
param grantPrincipals string = ''

@description('TAGFENCE_GRANT_MAX_TTL: the longest grant, a duration from 1m to 24h such as 30m, 2h or 1h30m (default 2h).')
param grantMaxTtl string = ''

@description('TAGFENCE_GRANT_MAX_PER_VAULT: live grants a vault may hold at once, 1 to 1000 (default 50).')
param grantMaxPerVault string = ''

@description('TAGFENCE_SOURCE: download (default), api, or an https URL. api also assigns the Service Tags reader role.')
param source string = ''

@description('TAGFENCE_SUBSCRIPTION_ID: subscription for the Discovery API; empty with source api: this subscription.')
param serviceTagsSubscriptionId string = ''

@description('TAGFENCE_LOCATION: region for the Discovery API; empty with source api: the deployment location.')
param serviceTagsLocation string = ''

@description('TAGFENCE_CLOUD: AzurePublic, AzureUSGovernment or AzureChina; empty: the cloud this is deployed to.')
param cloud string = ''

@description('TAGFENCE_ARM_ENDPOINT: override the cloud\'s ARM endpoint.')
param armEndpoint string = ''

@description('TAGFENCE_DOWNLOAD_PAGE_URL: override the page that links the weekly Service Tags file.')
param downloadPageUrl string = ''

@description('TAGFENCE_CREDENTIAL: auto, managed-identity, workload-identity or developer-tools.')
param credential string = 'managed-identity'

@description('TAGFENCE_MIN_SERVICE_TAGS: refuse a Service Tags document with fewer tags.')
param minServiceTags string = ''

@description('TAGFENCE_CONCURRENCY: vaults reconciled at once in each subscription (default 8).')
param concurrency string = ''

@description('TAGFENCE_OBSERVE: graph (read every firewall in one Resource Graph query, then through ARM only the vaults that need work) or arm (read every vault through ARM); default graph.')
param observe string = ''

@description('TAGFENCE_HTTP_TIMEOUT_SECS (default 30).')
param httpTimeoutSecs string = ''

@description('TAGFENCE_HTTP_MAX_RETRIES (default 4).')
param httpMaxRetries string = ''

@description('TAGFENCE_HTTP_RETRY_DELAY_MS (default 800).')
param httpRetryDelayMs string = ''

@description('TAGFENCE_HTTP_CALL_TIMEOUT_SECS (default 120).')
param httpCallTimeoutSecs string = ''

@description('TAGFENCE_LOG: log filter (default tagfence=info,warn).')
param logFilter string = ''

@description('TAGFENCE_STATE_URL: blob endpoint (optionally with /<container>) for tagfence\'s state; empty: the storage account created here (its AzureWebJobsStorage__blobServiceUri).')
param stateUrl string = ''

@description('TAGFENCE_STATE_CONTAINER: the state container (created here in tagfence\'s storage account) when TAGFENCE_STATE_URL names none.')
@minLength(3)
@maxLength(63)
param stateContainer string = 'tagfence'

@description('TAGFENCE_STATE_CA_FILE: a PEM certificate (a path in the package) to trust for the state endpoint besides the system roots.')
param stateCaFile string = ''

@description('TAGFENCE_CA_FILE: PEM certificates (a path in the package) to trust for ARM and the Service Tags download besides the system roots (a TLS-inspecting proxy).')
param caFile string = ''

@description('TAGFENCE_GRACE_DAYS: for this many days after a selected tag changes, also keep the ranges of its previous version (default 0, at most 90).')
param graceDays string = ''

@description('TAGFENCE_ALLOW_OLDER: accept a Service Tags document older than the last one applied (default false).')
param allowOlder string = ''

@description('TAGFENCE_DISCOVER_SUBSCRIPTIONS: comma-separated subscription ids; every resource of an enabled kind there carrying the discovery tag is managed too. The firewall role is assigned on each.')
param discoverSubscriptions string = ''

@description('TAGFENCE_DISCOVER_MANAGEMENT_GROUPS: comma-separated management group names to discover tagged resources under. Assign the firewall role there yourself (docs/deploy.md): a subscription-scope deployment cannot.')
param discoverManagementGroups string = ''

@description('TAGFENCE_DISCOVER_TAG: the tag that marks a vault for discovery (default tagfence).')
param discoverTag string = 'tagfence'

@description('TAGFENCE_KINDS: the kinds of resource discovery and the Event Grid hook consider, comma-separated: key_vault, storage_account, container_registry (any case, - for _; empty: all three). The firewall role gets the read and write actions of these kinds only, so a listed resource of another kind could not be written (the preprovision hook refuses one).')
param enabledKinds string = 'key_vault,storage_account,container_registry'

@secure()
@description('TAGFENCE_NOTIFY_URL: a Slack- or Teams-compatible webhook for a message when a run changes a vault or fails (a secret; empty: none).')
param notifyUrl string = ''

// ---------------------------------------------------------------------------------------------
// Platform
// ---------------------------------------------------------------------------------------------

@description('Event Grid hook. Empty: create a Microsoft.Resources.Subscriptions system topic for this subscription. "<resource group>/<name>": use that existing one (a subscription can have only one). "off": no hook.')
param eventGridSystemTopic string = ''

@description('Flex Consumption instance memory in MB (2048 is Flex\'s default; 512 is cheaper per second where offered).')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Flex Consumption: most instances at once.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Storage redundancy of tagfence\'s own account (state, deployment package, host locks).')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
param storageSku string = 'Standard_LRS'

@description('Days of logs kept in Log Analytics.')
@minValue(30)
@maxValue(730)
param logRetentionDays int = 30

// ---------------------------------------------------------------------------------------------
// Derived values
// ---------------------------------------------------------------------------------------------

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var rgName = empty(resourceGroupName) ? 'rg-${environmentName}' : resourceGroupName
var tags = {
  'azd-env-name': environmentName
  app: 'tagfence'
}

// (pycep 0.5.1, checkov's parser, has no map function; for-expressions do the same.)
var vaultIdsGiven = [for v in split(vaults, ','): trim(v)]
// `none` (any case) lists nothing; the preprovision hook refuses it beside resource ids.
var vaultIds = filter(vaultIdsGiven, v => !empty(v) && toLower(v) != 'none')
var resourceIdsGiven = [for v in split(listedResources, ','): trim(v)]
var resourceIds = filter(resourceIdsGiven, v => !empty(v))
// Both lists take any kind; each id's kind is its provider namespace and type (segments 6 and 7 of
// /subscriptions/<sub>/resourceGroups/<group>/providers/<namespace>/<type>/<name>, counting the
// empty segment before the first /), compared without case as ARM does. An id of another type
// gets no assignment (the preprovision hook and tagfence refuse it).
var listedIds = union(vaultIds, resourceIds)
var listedVaultIds = filter(listedIds, id => toLower(split(id, '/')[6]) == 'microsoft.keyvault' && toLower(split(id, '/')[7]) == 'vaults')
var listedStorageAccountIds = filter(listedIds, id => toLower(split(id, '/')[6]) == 'microsoft.storage' && toLower(split(id, '/')[7]) == 'storageaccounts')
var listedRegistryIds = filter(listedIds, id => toLower(split(id, '/')[6]) == 'microsoft.containerregistry' && toLower(split(id, '/')[7]) == 'registries')
var roleResourceGroupIdsGiven = [for v in split(vaultRoleResourceGroups, ','): trim(v)]
var roleResourceGroupIds = filter(roleResourceGroupIdsGiven, v => !empty(v))
var roleSubscriptionIdsGiven = [for v in split('${vaultRoleSubscriptions},${discoverSubscriptions}', ','): last(split(trim(v), '/'))]
var roleSubscriptionIds = filter(roleSubscriptionIdsGiven, v => !empty(v))

// The kinds the firewall role covers: TAGFENCE_KINDS as tagfence reads it (any case, `-` for `_`,
// blanks dropped; none at all: every kind). Least privilege: a kind's read and write actions are in
// the role only when its name is here. `scripts/infra_gate.sh` evaluates the role's actions for
// several values of enabledKinds.
var allKinds = 'key_vault,storage_account,container_registry'
var kindsGiven = [for k in split(enabledKinds, ','): toLower(replace(trim(k), '-', '_'))]
var kindsListed = filter(kindsGiven, k => !empty(k))
var kinds = empty(kindsListed) ? split(allKinds, ',') : kindsListed
var keyVaultActions = [
  'Microsoft.KeyVault/vaults/read'
  'Microsoft.KeyVault/vaults/write'
]
var storageAccountActions = [
  'Microsoft.Storage/storageAccounts/read'
  'Microsoft.Storage/storageAccounts/write'
]
var registryActions = [
  'Microsoft.ContainerRegistry/registries/read'
  'Microsoft.ContainerRegistry/registries/write'
]
var serviceTagsActions = [
  'Microsoft.Network/locations/serviceTags/read'
]
var firewallRoleActions = concat(contains(kinds, 'key_vault') ? keyVaultActions : [], contains(kinds, 'storage_account') ? storageAccountActions : [], contains(kinds, 'container_registry') ? registryActions : [], serviceTagsActions)

var usesApi = toLower(trim(source)) == 'api'
var apiSubscriptionId = empty(serviceTagsSubscriptionId) ? subscription().subscriptionId : serviceTagsSubscriptionId
var cloudFromEnvironment = environment().name == 'AzureUSGovernment' ? 'AzureUSGovernment' : (environment().name == 'AzureChinaCloud' ? 'AzureChina' : 'AzurePublic')

var topicSetting = toLower(trim(eventGridSystemTopic))
var eventGridEnabled = topicSetting != 'off'
var createSystemTopic = empty(topicSetting)
var existingTopicParts = split(trim(eventGridSystemTopic), '/')

// The custom roles may be assigned in every subscription that holds a scope given above.
var homeScope = [
  subscription().id
]
var listedSubscriptionScopes = [for id in listedIds: toLower('/subscriptions/${split(id, '/')[2]}')]
var resourceGroupSubscriptionScopes = [for id in roleResourceGroupIds: toLower('/subscriptions/${split(id, '/')[2]}')]
var subscriptionScopes = [for id in roleSubscriptionIds: toLower('/subscriptions/${id}')]
var assignableScopes = union(homeScope, listedSubscriptionScopes, resourceGroupSubscriptionScopes, subscriptionScopes)
var apiScope = [
  '/subscriptions/${apiSubscriptionId}'
]

// ---------------------------------------------------------------------------------------------
// Resources
// ---------------------------------------------------------------------------------------------

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: rgName
  location: location
  tags: tags
}

module app 'app/resources.bicep' = {
  name: 'tagfence-resources'
  scope: rg
  params: {
    location: location
    tags: tags
    resourceToken: resourceToken
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    storageSku: storageSku
    logRetentionDays: logRetentionDays
    createSystemTopic: createSystemTopic
    vaults: join(vaultIds, ',')
    listedResources: join(resourceIds, ',')
    schedule: empty(trim(schedule)) ? '0 30 6 * * 3' : trim(schedule)
    configFile: configFile
    serviceTagNames: serviceTagNames
    staticRules: staticRules
    maxRules: maxRules
    fit: fit
    envelope: envelope
    maxExtraAddresses: maxExtraAddresses
    maxRemoveFraction: maxRemoveFraction
    slash31: slash31
    prune: prune
    adoptExisting: adoptExisting
    initFirewall: initFirewall
    acceptMissingRules: acceptMissingRules
    allowTagShrink: allowTagShrink
    maxTagShrink: maxTagShrink
    grantPrincipals: grantPrincipals
    grantMaxTtl: grantMaxTtl
    grantMaxPerVault: grantMaxPerVault
    source: source
    serviceTagsSubscriptionId: usesApi ? apiSubscriptionId : serviceTagsSubscriptionId
    serviceTagsLocation: usesApi && empty(serviceTagsLocation) ? location : serviceTagsLocation
    cloud: empty(cloud) ? cloudFromEnvironment : cloud
    armEndpoint: armEndpoint
    downloadPageUrl: downloadPageUrl
    credential: credential
    minServiceTags: minServiceTags
    concurrency: concurrency
    observe: observe
    httpTimeoutSecs: httpTimeoutSecs
    httpMaxRetries: httpMaxRetries
    httpRetryDelayMs: httpRetryDelayMs
    httpCallTimeoutSecs: httpCallTimeoutSecs
    logFilter: logFilter
    stateUrl: stateUrl
    stateContainer: stateContainer
    stateCaFile: stateCaFile
    caFile: caFile
    graceDays: graceDays
    allowOlder: allowOlder
    discoverSubscriptions: discoverSubscriptions
    discoverManagementGroups: discoverManagementGroups
    discoverTag: discoverTag
    enabledKinds: enabledKinds
    notifyUrl: notifyUrl
  }
}

// The only rights tagfence uses on a resource of an enabled kind: read it, write it (the PATCH of
// networkAcls, or a registry's networkRuleSet; no kind has a narrower action for its firewall).
// Service Tags read is inert at resource and resource-group scope and lets a subscription-scope
// assignment also serve `TAGFENCE_SOURCE=api`. Resource Graph discovery needs only read. The
// definition's name (a GUID) is seeded as when it held only Key Vault actions, so that an existing
// deployment updates its role in place.
resource firewallRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(subscription().id, environmentName, 'tagfence-vault-firewall')
  properties: {
    roleName: 'tagfence firewall (${environmentName}, ${resourceToken})'
    description: 'Read the resources of the kinds tagfence manages here (${join(kinds, ', ')}) and write their firewall; read Azure Service Tags. Used by tagfence.'
    type: 'CustomRole'
    permissions: [
      {
        actions: firewallRoleActions
        notActions: []
        dataActions: []
        notDataActions: []
      }
    ]
    assignableScopes: assignableScopes
  }
}

// Only for `TAGFENCE_SOURCE=api`: the Discovery API needs Service Tags read at subscription scope,
// and assigning the firewall role there would grant write on every resource of its kinds there.
resource serviceTagsReaderRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = if (usesApi) {
  name: guid(subscription().id, environmentName, 'tagfence-service-tags-reader')
  properties: {
    roleName: 'tagfence Service Tags reader (${environmentName}, ${resourceToken})'
    description: 'Read Azure Service Tags through the Discovery API. Used by tagfence.'
    type: 'CustomRole'
    permissions: [
      {
        actions: [
          'Microsoft.Network/locations/serviceTags/read'
        ]
        notActions: []
        dataActions: []
        notDataActions: []
      }
    ]
    assignableScopes: union(homeScope, apiScope)
  }
}

// One assignment on each listed resource, by a module of its kind deployed into its resource group.
module vaultRoles 'rbac/vault.bicep' = [
  for (id, i) in listedVaultIds: {
    name: 'tagfence-role-vault-${i}-${resourceToken}'
    scope: resourceGroup(split(id, '/')[2], split(id, '/')[4])
    params: {
      vaultName: split(id, '/')[8]
      principalId: app.outputs.identityPrincipalId
      roleDefinitionGuid: firewallRole.name
    }
    dependsOn: [
      firewallRole
    ]
  }
]

module storageAccountRoles 'rbac/storage-account.bicep' = [
  for (id, i) in listedStorageAccountIds: {
    name: 'tagfence-role-st-${i}-${resourceToken}'
    scope: resourceGroup(split(id, '/')[2], split(id, '/')[4])
    params: {
      storageAccountName: split(id, '/')[8]
      principalId: app.outputs.identityPrincipalId
      roleDefinitionGuid: firewallRole.name
    }
    dependsOn: [
      firewallRole
    ]
  }
]

module registryRoles 'rbac/registry.bicep' = [
  for (id, i) in listedRegistryIds: {
    name: 'tagfence-role-cr-${i}-${resourceToken}'
    scope: resourceGroup(split(id, '/')[2], split(id, '/')[4])
    params: {
      registryName: split(id, '/')[8]
      principalId: app.outputs.identityPrincipalId
      roleDefinitionGuid: firewallRole.name
    }
    dependsOn: [
      firewallRole
    ]
  }
]

module resourceGroupRoles 'rbac/resource-group.bicep' = [
  for (id, i) in roleResourceGroupIds: {
    name: 'tagfence-role-rg-${i}-${resourceToken}'
    scope: resourceGroup(split(id, '/')[2], split(id, '/')[4])
    params: {
      principalId: app.outputs.identityPrincipalId
      roleDefinitionGuid: firewallRole.name
    }
    dependsOn: [
      firewallRole
    ]
  }
]

module subscriptionRoles 'rbac/subscription.bicep' = [
  for (id, i) in roleSubscriptionIds: {
    name: 'tagfence-role-sub-${i}-${resourceToken}'
    scope: subscription(id)
    params: {
      principalId: app.outputs.identityPrincipalId
      roleDefinitionGuid: firewallRole.name
    }
    dependsOn: [
      firewallRole
    ]
  }
]

module serviceTagsRole 'rbac/subscription.bicep' = if (usesApi) {
  name: 'tagfence-role-service-tags-${resourceToken}'
  scope: subscription(apiSubscriptionId)
  params: {
    principalId: app.outputs.identityPrincipalId
    roleDefinitionGuid: guid(subscription().id, environmentName, 'tagfence-service-tags-reader')
  }
  dependsOn: [
    serviceTagsReaderRole
  ]
}

// ---------------------------------------------------------------------------------------------
// Just-in-time grants over HTTP (docs/grants.md): App Service authentication with the Microsoft
// Entra ID provider in front of the Function App (app/auth.bicep), only when an app registration
// is given. Without it the grant route refuses every request (401); the CLI grants still work.
// ---------------------------------------------------------------------------------------------

@maxLength(36)
@description('Application (client) id of the Microsoft Entra app registration whose tokens (audience api://<client id>) callers of POST /api/grant present (docs/deploy.md, "Grants over HTTP"). Empty: grants over HTTP are not configured and App Service authentication is not deployed.')
param grantAuthClientId string = ''

module grantAuth 'app/auth.bicep' = if (!empty(trim(grantAuthClientId))) {
  name: 'tagfence-grant-auth-${resourceToken}'
  scope: rg
  params: {
    siteName: app.outputs.functionAppName
    clientId: trim(grantAuthClientId)
    tenantId: tenant().tenantId
  }
}

// ---------------------------------------------------------------------------------------------
// Outputs (azd stores them in the environment; infra/hooks/postdeploy.sh reads them)
// ---------------------------------------------------------------------------------------------

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = app.outputs.functionAppName
output AZURE_FUNCTION_APP_HOSTNAME string = app.outputs.functionAppHostName
output AZURE_FUNCTION_APP_ID string = app.outputs.functionAppId
output AZURE_FUNCTION_IDENTITY_CLIENT_ID string = app.outputs.identityClientId
output AZURE_FUNCTION_IDENTITY_PRINCIPAL_ID string = app.outputs.identityPrincipalId
output AZURE_STORAGE_ACCOUNT_NAME string = app.outputs.storageAccountName
output APPLICATIONINSIGHTS_NAME string = app.outputs.applicationInsightsName
// The firewall role (named VAULT_… from when it held Key Vault actions only; azd environments keep the name).
output VAULT_FIREWALL_ROLE_ID string = firewallRole.id
output EVENTGRID_SYSTEM_TOPIC_NAME string = createSystemTopic ? app.outputs.systemTopicName : (eventGridEnabled ? last(existingTopicParts) : '')
output EVENTGRID_SYSTEM_TOPIC_RESOURCE_GROUP string = createSystemTopic ? rg.name : (eventGridEnabled ? first(existingTopicParts) : '')
