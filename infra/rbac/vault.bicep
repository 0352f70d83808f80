// Assigns a role to tagfence's identity on one Key Vault (deployed into the vault's resource group).
// A module per scope keeps every role assignment a plain resource: checkov misreads resources
// declared in a `[for …]` loop, and the loop over vaults lives in main.bicep instead.

targetScope = 'resourceGroup'

@description('Name of an existing Key Vault in this resource group.')
param vaultName string

@description('Object id of tagfence\'s user-assigned identity.')
param principalId string

@description('GUID of the role definition (tagfence\'s custom firewall role).')
param roleDefinitionGuid string

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: vaultName
}

resource assignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, principalId, roleDefinitionGuid)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleDefinitionGuid)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'tagfence: keep this vault\'s firewall in step with Azure Service Tags'
  }
}
