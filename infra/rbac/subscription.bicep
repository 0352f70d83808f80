// Assigns a role to tagfence's identity on a whole subscription: for the firewall role, every
// resource of an enabled kind in it (the widest scope; docs/security.md); for the Service Tags
// reader role, the Discovery API.

targetScope = 'subscription'

@description('Object id of tagfence\'s user-assigned identity.')
param principalId string

@description('GUID of the role definition.')
param roleDefinitionGuid string

resource assignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(subscription().id, principalId, roleDefinitionGuid)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleDefinitionGuid)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'tagfence'
  }
}
