// Assigns a role to tagfence's identity on a whole resource group: every resource of an enabled
// kind in it (vaults, storage accounts, registries), present and future. Wider than a per-resource
// assignment; prefer naming the resources (docs/security.md).

targetScope = 'resourceGroup'

@description('Object id of tagfence\'s user-assigned identity.')
param principalId string

@description('GUID of the role definition (tagfence\'s custom firewall role).')
param roleDefinitionGuid string

resource assignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(resourceGroup().id, principalId, roleDefinitionGuid)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleDefinitionGuid)
    principalId: principalId
    principalType: 'ServicePrincipal'
    // Worded when only vaults were managed; kept so that existing assignments are not rewritten.
    description: 'tagfence: keep the firewalls of this resource group\'s vaults in step with Azure Service Tags'
  }
}
