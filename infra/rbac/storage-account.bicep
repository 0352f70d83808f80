// Assigns a role to tagfence's identity on one Storage account (deployed into the account's
// resource group), as rbac/vault.bicep does on a Key Vault. A module per scope keeps every role
// assignment a plain resource: checkov misreads resources declared in a `[for …]` loop, and the
// loop over the listed accounts lives in main.bicep instead.

targetScope = 'resourceGroup'

@description('Name of an existing Storage account in this resource group.')
param storageAccountName string

@description('Object id of tagfence\'s user-assigned identity.')
param principalId string

@description('GUID of the role definition (tagfence\'s custom firewall role).')
param roleDefinitionGuid string

// Only named, never read or written here: the api-version is one every Bicep release knows
// (tagfence itself reads and writes accounts with 2025-06-01, src/azure/kinds.rs).
resource storageAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource assignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storageAccount.id, principalId, roleDefinitionGuid)
  scope: storageAccount
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleDefinitionGuid)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'tagfence: keep this storage account\'s firewall in step with Azure Service Tags'
  }
}
