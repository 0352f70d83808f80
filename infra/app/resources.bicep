// tagfence's own resources, in its resource group: identity, storage, monitoring, the Flex
// Consumption Function App with the `tagfence` custom handler and its app settings, the role
// assignments on these resources, and the Event Grid system topic for the subscription.
// Parameters named after a tagfence setting go to the app setting of the same name; '' means
// tagfence's own default (tagfence drops empty TAGFENCE_* variables before reading them).

targetScope = 'resourceGroup'

param location string
param tags object
param resourceToken string

@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int
param maximumInstanceCount int
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
param storageSku string
param logRetentionDays int

@description('Create the Microsoft.Resources.Subscriptions system topic for this subscription.')
param createSystemTopic bool

// tagfence settings
param vaults string
param listedResources string
param schedule string
param configFile string
param serviceTagNames string
param staticRules string
param maxRules string
param fit string
param envelope string
param maxExtraAddresses string
param maxRemoveFraction string
param slash31 string
param prune string
param adoptExisting string
param initFirewall string
param acceptMissingRules string
param allowTagShrink string
param maxTagShrink string
param grantPrincipals string
param grantMaxTtl string
param grantMaxPerVault string
param source string
param serviceTagsSubscriptionId string
param serviceTagsLocation string
param cloud string
param armEndpoint string
param downloadPageUrl string
param credential string
param minServiceTags string
param concurrency string
param observe string
param httpTimeoutSecs string
param httpMaxRetries string
param httpRetryDelayMs string
param httpCallTimeoutSecs string
param logFilter string
param stateUrl string
param stateContainer string
param stateCaFile string
param caFile string
param graceDays string
param allowOlder string
param discoverSubscriptions string
param discoverManagementGroups string
param discoverTag string
param enabledKinds string
@secure()
param notifyUrl string

var functionAppName = 'func-tagfence-${resourceToken}'
var deploymentContainerName = 'app-package-${resourceToken}'
// tagfence keeps its state (last-applied rule sets, snapshots, run records, vault locks) in
// this container (TAGFENCE_STATE_CONTAINER).
var stateContainerName = stateContainer

// Built-in roles (ids are the same in every cloud).
var storageBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb'

// ---------------------------------------------------------------------------------------------
// Identity
// ---------------------------------------------------------------------------------------------

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-tagfence-${resourceToken}'
  location: location
  tags: tags
}

// ---------------------------------------------------------------------------------------------
// Storage: host storage (AzureWebJobsStorage), the deployment package, tagfence's state.
// Entra only: no shared key, no public blobs, HTTPS and TLS 1.2.
// ---------------------------------------------------------------------------------------------

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: 'sttagfence${resourceToken}'
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: storageSku
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    isLocalUserEnabled: false
    isSftpEnabled: false
    isHnsEnabled: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource stateContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: stateContainerName
  properties: {
    publicAccess: 'None'
  }
}

// Host storage, the deployment package and tagfence's state are all blobs. No tagfence function
// uses queues or tables, so no queue or table role is granted.
resource blobOwnerAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identity.id, storageBlobDataOwner)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataOwner)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    description: 'tagfence: Functions host storage, deployment package, tagfence state'
  }
}

// ---------------------------------------------------------------------------------------------
// Monitoring: Log Analytics + workspace-based Application Insights, Entra ingestion only
// ---------------------------------------------------------------------------------------------

resource logAnalytics 'Microsoft.OperationalInsights/workspaces@2022-10-01' = {
  name: 'log-tagfence-${resourceToken}'
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: logRetentionDays
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: 'appi-tagfence-${resourceToken}'
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logAnalytics.id
    DisableLocalAuth: true
    publicNetworkAccessForIngestion: 'Enabled'
    publicNetworkAccessForQuery: 'Enabled'
  }
}

resource metricsPublisherAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, identity.id, monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisher)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    description: 'tagfence: send telemetry to Application Insights with Entra authentication'
  }
}

// ---------------------------------------------------------------------------------------------
// Flex Consumption plan and Function App (custom handler)
// ---------------------------------------------------------------------------------------------

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: 'plan-tagfence-${resourceToken}'
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: functionAppName
  location: location
  tags: union(tags, {
    'azd-service-name': 'tagfence'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identity.id}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    publicNetworkAccess: 'Enabled'
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identity.id
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      // UNVERIFIED against a live subscription: Flex's stack list has `custom`, and newer
      // templates use version 1.0 (docs/deploy.md).
      runtime: {
        name: 'custom'
        version: '1.0'
      }
    }
  }
  dependsOn: [
    deploymentContainer
    blobOwnerAssignment
  ]
}

// No basic-auth publishing: azd and `az functionapp deployment source config-zip` deploy with an
// Entra token.
resource ftpPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'scm'
  properties: {
    allow: false
  }
}

// Every app setting tagfence reads, and the host's own. tests/settings.rs checks that each setting
// the code reads is here (and in docs/configuration.md); keep one key per line.
resource appSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: functionApp
  name: 'appsettings'
  properties: {
    // Functions host storage through the user-assigned identity (no connection string, no key).
    AzureWebJobsStorage__credential: 'managedidentity'
    AzureWebJobsStorage__clientId: identity.properties.clientId
    AzureWebJobsStorage__blobServiceUri: storage.properties.primaryEndpoints.blob
    AzureWebJobsStorage__queueServiceUri: storage.properties.primaryEndpoints.queue
    AzureWebJobsStorage__tableServiceUri: storage.properties.primaryEndpoints.table
    // Application Insights with Entra authentication (local auth is disabled).
    APPLICATIONINSIGHTS_CONNECTION_STRING: appInsights.properties.ConnectionString
    APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identity.properties.clientId};Authorization=AAD'
    // tagfence authenticates to ARM as the user-assigned identity.
    AZURE_CLIENT_ID: identity.properties.clientId
    // tagfence (docs/configuration.md); '' = tagfence's default.
    TAGFENCE_SCHEDULE: schedule
    TAGFENCE_RESOURCES: listedResources
    TAGFENCE_VAULTS: vaults
    TAGFENCE_CONFIG: configFile
    TAGFENCE_TAGS: serviceTagNames
    TAGFENCE_STATIC_RULES: staticRules
    TAGFENCE_MAX_RULES: maxRules
    TAGFENCE_FIT: fit
    TAGFENCE_ENVELOPE: envelope
    TAGFENCE_MAX_EXTRA_ADDRESSES: maxExtraAddresses
    TAGFENCE_MAX_REMOVE_FRACTION: maxRemoveFraction
    TAGFENCE_SLASH31: slash31
    TAGFENCE_PRUNE: prune
    TAGFENCE_ADOPT_EXISTING: adoptExisting
    TAGFENCE_INIT_FIREWALL: initFirewall
    TAGFENCE_ACCEPT_MISSING_RULES: acceptMissingRules
    TAGFENCE_ALLOW_TAG_SHRINK: allowTagShrink
    TAGFENCE_MAX_TAG_SHRINK: maxTagShrink
    TAGFENCE_GRANT_PRINCIPALS: grantPrincipals
    TAGFENCE_GRANT_MAX_TTL: grantMaxTtl
    TAGFENCE_GRANT_MAX_PER_VAULT: grantMaxPerVault
    TAGFENCE_SOURCE: source
    TAGFENCE_SUBSCRIPTION_ID: serviceTagsSubscriptionId
    TAGFENCE_LOCATION: serviceTagsLocation
    TAGFENCE_CLOUD: cloud
    TAGFENCE_ARM_ENDPOINT: armEndpoint
    TAGFENCE_DOWNLOAD_PAGE_URL: downloadPageUrl
    TAGFENCE_CREDENTIAL: credential
    TAGFENCE_MIN_SERVICE_TAGS: minServiceTags
    TAGFENCE_CONCURRENCY: concurrency
    TAGFENCE_OBSERVE: observe
    TAGFENCE_HTTP_TIMEOUT_SECS: httpTimeoutSecs
    TAGFENCE_HTTP_MAX_RETRIES: httpMaxRetries
    TAGFENCE_HTTP_RETRY_DELAY_MS: httpRetryDelayMs
    TAGFENCE_HTTP_CALL_TIMEOUT_SECS: httpCallTimeoutSecs
    TAGFENCE_LOG: logFilter
    TAGFENCE_STATE_URL: stateUrl
    TAGFENCE_STATE_CONTAINER: stateContainerName
    TAGFENCE_STATE_CA_FILE: stateCaFile
    TAGFENCE_CA_FILE: caFile
    TAGFENCE_GRACE_DAYS: graceDays
    TAGFENCE_ALLOW_OLDER: allowOlder
    TAGFENCE_DISCOVER_SUBSCRIPTIONS: discoverSubscriptions
    TAGFENCE_DISCOVER_MANAGEMENT_GROUPS: discoverManagementGroups
    TAGFENCE_DISCOVER_TAG: discoverTag
    TAGFENCE_KINDS: enabledKinds
    TAGFENCE_NOTIFY_URL: notifyUrl
  }
  dependsOn: [
    stateContainer
    metricsPublisherAssignment
  ]
}

// ---------------------------------------------------------------------------------------------
// Event Grid: the subscription's resource events. The event subscription to function-eventgrid
// is made by infra/hooks/postdeploy.sh once the function (and its system key) exists.
// ---------------------------------------------------------------------------------------------

resource systemTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' = if (createSystemTopic) {
  name: 'evgt-tagfence-${resourceToken}'
  location: 'global'
  tags: tags
  properties: {
    source: subscription().id
    topicType: 'Microsoft.Resources.Subscriptions'
  }
}

output identityPrincipalId string = identity.properties.principalId
output identityClientId string = identity.properties.clientId
output identityId string = identity.id
output functionAppName string = functionApp.name
output functionAppId string = functionApp.id
output functionAppHostName string = functionApp.properties.defaultHostName
output storageAccountName string = storage.name
output applicationInsightsName string = appInsights.name
output systemTopicName string = createSystemTopic ? systemTopic.name : ''
