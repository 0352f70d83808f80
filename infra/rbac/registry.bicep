// Assigns a role to tagfence's identity on one Container Registry (deployed into the registry's
// resource group), as rbac/vault.bicep does on a Key Vault. A module per scope keeps every role
// assignment a plain resource: checkov misreads resources declared in a `[for …]` loop, and the
// loop over the listed registries lives in main.bicep instead.

targetScope = 'resourceGroup'

@description('Name of an existing Container Registry in this resource group.')
param registryName string

@description('Object id of tagfence\'s user-assigned identity.')
param principalId string

@description('GUID of the role definition (tagfence\'s custom firewall role).')
param roleDefinitionGuid string

resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' existing = {
  name: registryName
}

resource assignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(registry.id, principalId, roleDefinitionGuid)
  scope: registry
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleDefinitionGuid)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'tagfence: keep this registry\'s firewall in step with Azure Service Tags'
  }
}
