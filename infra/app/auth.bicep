// App Service authentication ("Easy Auth", authsettingsV2) with the Microsoft Entra ID provider in
// front of tagfence's Function App, for the just-in-time grant route (POST /api/grant,
// DELETE /api/grant/<id>; docs/grants.md). Deployed by main.bicep only when grantAuthClientId is
// set.
//
// - Authentication is not required for the app as a whole (requireAuthentication false,
//   AllowAnonymous): the on-demand sync (function key) and the Event Grid webhook (its system
//   key) must keep working without an Entra token. A request that carries a bearer token is
//   validated by the platform; the grant handler itself refuses a request without the principal
//   the platform forwards (X-MS-CLIENT-PRINCIPAL) with 401, and a principal not listed in
//   TAGFENCE_GRANT_PRINCIPALS with 403.
// - Tokens are validated against the app registration `clientId` of `tenantId`: issuer
//   <login endpoint><tenant>/v2.0 (Microsoft Learn, "Configure your App Service or Azure Functions
//   app to use Microsoft Entra sign-in": "Use <authentication-endpoint>/<tenant-id>/v2.0"), so the
//   registration should issue v2.0 access tokens (api.requestedAccessTokenVersion 2; see
//   docs/deploy.md). Audiences: the client id (always implied) and the Application ID URI
//   api://<client id>.
// - No client secret and no token store: the app never signs a user in; it only validates the
//   bearer tokens pipelines send.
//
// Schema: Microsoft Learn, "Microsoft.Web sites/config 'authsettingsV2'"
// (https://learn.microsoft.com/azure/templates/microsoft.web/sites/config-authsettingsv2).
// Not compiled or deployed here (no Bicep compiler offline); scripts/infra_gate.sh checks its
// syntax, wiring and the settings above.

targetScope = 'resourceGroup'

@minLength(2)
@description('Name of the Function App (in this resource group).')
param siteName string

@description('Application (client) id of the Microsoft Entra app registration that callers request tokens for (Application ID URI api://<client id>).')
param clientId string

@description('Microsoft Entra tenant of the app registration.')
param tenantId string

var issuer = '${environment().authentication.loginEndpoint}${tenantId}/v2.0'

resource site 'Microsoft.Web/sites@2024-04-01' existing = {
  name: siteName
}

resource grantAuth 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: site
  name: 'authsettingsV2'
  properties: {
    platform: {
      enabled: true
    }
    globalValidation: {
      requireAuthentication: false
      unauthenticatedClientAction: 'AllowAnonymous'
    }
    httpSettings: {
      requireHttps: true
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          clientId: clientId
          openIdIssuer: issuer
        }
        validation: {
          allowedAudiences: [
            'api://${clientId}'
            clientId
          ]
        }
      }
    }
    login: {
      tokenStore: {
        enabled: false
      }
    }
  }
}

output issuer string = issuer
