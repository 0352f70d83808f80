//! The public vocabulary shared by the library API and the control routes: which route a request
//! hit, what the emulator recorded about it, and the faults a test can inject.
//!
//! These types are serialised on the control routes (`/_emulator/requests`, `/_emulator/faults`),
//! so their serde shapes are part of the binary's interface: enums use serde's default externally
//! tagged form, e.g. `"VaultPatch"`, `"Drop"`, `{"Delay":{"ms":200}}`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The emulated endpoint a request was routed to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Route {
    /// `GET …/providers/Microsoft.KeyVault/vaults/{name}`.
    VaultGet,
    /// `PATCH …/providers/Microsoft.KeyVault/vaults/{name}`.
    VaultPatch,
    /// `PUT …/providers/Microsoft.KeyVault/vaults/{name}`.
    VaultPut,
    /// `DELETE …/providers/Microsoft.KeyVault/vaults/{name}`.
    VaultDelete,
    /// `GET /subscriptions/{sub}[/resourceGroups/{rg}]/providers/Microsoft.KeyVault/vaults`.
    VaultList,
    /// `GET …/providers/Microsoft.Storage/storageAccounts/{name}`.
    StorageAccountGet,
    /// `PATCH …/providers/Microsoft.Storage/storageAccounts/{name}`.
    StorageAccountPatch,
    /// `GET …/providers/Microsoft.ContainerRegistry/registries/{name}`.
    RegistryGet,
    /// `PATCH …/providers/Microsoft.ContainerRegistry/registries/{name}`.
    RegistryPatch,
    /// `GET /subscriptions/{sub}/providers/Microsoft.ContainerRegistry/locations/{loc}/operationResults/{id}`:
    /// the `Azure-AsyncOperation` URL of a registry PATCH answered 201 (opt-in,
    /// [`crate::RegistryUpdates`]).
    RegistryOperation,
    /// `GET /subscriptions/{sub}[/resourceGroups/{rg}]/resources` (ARM's generic list, which
    /// the SDKs' `vaults.list` calls with `$filter=resourceType eq 'Microsoft.KeyVault/vaults'`).
    ResourceList,
    /// `GET /msi/token`, the App Service / Functions identity endpoint.
    TokenAppService,
    /// `GET /metadata/identity/oauth2/token`, the VM instance metadata (IMDS) identity endpoint.
    TokenImds,
    /// `GET /subscriptions/{sub}/providers/Microsoft.Network/locations/{loc}/serviceTags`.
    ServiceTagsApi,
    /// `GET /subscriptions/{sub}/providers/Microsoft.Network/locations/{loc}/serviceTagDetails`.
    ServiceTagDetails,
    /// `GET /download/details.aspx?id=…` (or `confirmation.aspx`), the page listing the file links.
    DownloadPage,
    /// `GET /download/…/ServiceTags_Public_YYYYMMDD.json`.
    DownloadFile,
    /// `POST /providers/Microsoft.ResourceGraph/resources`.
    ResourceGraph,
    /// `/_emulator/…`: the emulator's own control routes; never logged, never faulted.
    Control,
    /// Anything else (answered with 404).
    Other,
}

impl Route {
    /// Whether this is an ARM read: a GET on a subscription-scoped ARM route (a vault, storage
    /// account or registry, a vault or resource list, the Service Tags API). It spends a token
    /// from the subscription's read bucket (refused when empty only with
    /// [`crate::Config::read_throttle`]). Resource Graph
    /// queries are not ARM reads: they spend Resource Graph's own quota.
    pub fn is_arm_read(self) -> bool {
        matches!(
            self,
            Route::VaultGet
                | Route::StorageAccountGet
                | Route::RegistryGet
                | Route::RegistryOperation
                | Route::VaultList
                | Route::ResourceList
                | Route::ServiceTagsApi
                | Route::ServiceTagDetails
        )
    }

    /// Whether this is an ARM write, PATCH or PUT of any kind (it spends a token from the
    /// subscription's write bucket).
    pub fn is_arm_write(self) -> bool {
        matches!(
            self,
            Route::VaultPatch | Route::VaultPut | Route::StorageAccountPatch | Route::RegistryPatch
        )
    }

    /// Whether this is an ARM delete (it spends a token from the subscription's delete bucket,
    /// apart from writes').
    pub fn is_arm_delete(self) -> bool {
        self == Route::VaultDelete
    }

    /// Whether this route is an ARM route: it needs an ARM token and carries ARM's headers.
    pub fn is_arm(self) -> bool {
        matches!(
            self,
            Route::VaultGet
                | Route::VaultPatch
                | Route::VaultPut
                | Route::VaultDelete
                | Route::StorageAccountGet
                | Route::StorageAccountPatch
                | Route::RegistryGet
                | Route::RegistryPatch
                | Route::RegistryOperation
                | Route::VaultList
                | Route::ResourceList
                | Route::ServiceTagsApi
                | Route::ServiceTagDetails
                | Route::ResourceGraph
        )
    }

    /// Whether this route is a Key Vault route (one vault; its record carries the vault name).
    pub fn is_vault(self) -> bool {
        matches!(
            self,
            Route::VaultGet | Route::VaultPatch | Route::VaultPut | Route::VaultDelete
        )
    }

    /// Whether this route addresses one resource of any kind — a vault, a storage account or a
    /// container registry (its record carries the resource's name in `vault`).
    pub fn is_resource(self) -> bool {
        self.is_vault()
            || matches!(
                self,
                Route::StorageAccountGet
                    | Route::StorageAccountPatch
                    | Route::RegistryGet
                    | Route::RegistryPatch
            )
    }
}

/// What the emulator recorded about one handled (non-control) request.
#[derive(Clone, Debug, Serialize)]
pub struct RequestRecord {
    /// HTTP method, e.g. `PATCH`.
    pub method: String,
    /// Request path as sent (not decoded, original case).
    pub path: String,
    /// Raw query string without the `?` (empty when there is none).
    pub query: String,
    /// Whether the request came over TLS (https) rather than plain http.
    pub tls: bool,
    /// Response status; `0` when the connection was dropped by a [`FaultKind::Drop`] fault. After
    /// a [`FaultKind::DropAfter`] fault, the status the handler produced (which the client never
    /// received).
    pub status: u16,
    /// The route the request matched.
    pub route: Route,
    /// The resource's name, lower-cased, for the routes of one resource of any kind (a vault, a
    /// storage account, a registry: [`Route::is_resource`]).
    pub vault: Option<String>,
    /// Milliseconds between the emulator's start and the request's arrival.
    pub at_ms: u64,
    /// Description of the injected fault that applied to this request, if any.
    pub fault: Option<String>,
    /// Whether the request passed the route's authentication and authorisation checks
    /// (a valid, unexpired ARM token and, for the routes of one resource, a resource that is not
    /// forbidden; the
    /// identity header for token routes). Always `true` for routes that need no credentials.
    pub authorized: bool,
    /// Whether the client closed the connection before the emulator answered (for example after
    /// timing out during a [`FaultKind::Delay`]). The request was then not handled at all (a
    /// write was not applied) and `status` is `0`.
    pub abandoned: bool,
}

/// A fault to inject into matching requests.
///
/// Faults are kept in a FIFO queue. Each matching request consumes one `count` of the first
/// matching fault; a fault is removed when its count reaches zero.
#[derive(Clone, Debug, Deserialize)]
pub struct Fault {
    /// Only requests to this route; `None` matches every non-control route.
    #[serde(default)]
    pub route: Option<Route>,
    /// Only requests for the resource of this name, of any kind (case-insensitive); requests
    /// without a resource never match.
    #[serde(default)]
    pub vault: Option<String>,
    /// What to do to a matching request.
    pub kind: FaultKind,
    /// How many matching requests the fault applies to.
    pub count: u32,
}

/// What an injected fault does.
#[derive(Clone, Debug, Deserialize)]
pub enum FaultKind {
    /// Answer with this status instead of handling the request: ARM error body
    /// `{"error":{"code","message"}}`; optional `Retry-After` seconds header.
    Status {
        /// HTTP status code, e.g. 503.
        status: u16,
        /// ARM error code, e.g. `ServerBusy`.
        code: String,
        /// ARM error message.
        message: String,
        /// Value of the `Retry-After` header in seconds, if one should be sent.
        #[serde(default)]
        retry_after: Option<u64>,
    },
    /// Sleep this long, then handle the request normally.
    Delay {
        /// Delay in milliseconds.
        ms: u64,
    },
    /// Close the connection without writing any response (a transport error the client sees before
    /// any status line). The request is not handled: a write is not applied.
    Drop,
    /// Handle the request normally (a write is applied), then close the connection without
    /// writing the response: the answer is lost, as when a connection breaks after the service
    /// acted. The record keeps the status the handler produced.
    DropAfter,
    /// Handle the request normally, then edit the ipRules of the request's resource (a vault, a
    /// storage account or a registry, each in its own rule list and entry shape) out of band, as a
    /// person in the portal would right after it: first add the `add` rules not yet present (in
    /// a vault a bare IPv4 address gains `/32`; storage accounts and registries keep it bare),
    /// then take out the `remove` rules present. The edit lands after the response was produced
    /// and before it is sent, so the client never sees it in this response and always sees it in
    /// the next read. Requests without a resource (and resources that do not exist) are handled
    /// normally with no edit.
    EditAfter {
        /// Rules to add, e.g. `"52.174.99.1"`.
        #[serde(default)]
        add: Vec<String>,
        /// Rules to remove.
        #[serde(default)]
        remove: Vec<String>,
    },
    /// Handle the request normally, then reshape the JSON body of the answer before it is sent:
    /// the answer lies, the stored vault is unchanged. Edits are [RFC 6901] JSON Pointers
    /// (`"/properties/networkAcls"`, `"/properties/networkAcls/ipRules/0"`; `~1` is `/`, `~0` is
    /// `~`; `""` is the whole body), applied in this order: every `remove`, then every `null`, then
    /// every `set`, each in the order given. The status and headers stay the handler's (the
    /// `Content-Length` is recomputed). A body that is not JSON is only changed by a whole-body
    /// (`""`) edit.
    ///
    /// JSON: `{"Reshape":{"remove":["/properties/networkAcls"],"null":[],"set":[["/properties/x",1]]}}`
    /// (each list optional).
    ///
    /// [RFC 6901]: https://www.rfc-editor.org/rfc/rfc6901
    Reshape {
        /// Members or array elements to take out; a missing one is no error. Removing `""` leaves
        /// an empty body.
        #[serde(default)]
        remove: Vec<String>,
        /// Members or array elements to make `null` (same as `set` with `null`).
        #[serde(default)]
        null: Vec<String>,
        /// Members to set: missing parent objects are created; in an array, an index replaces
        /// that element and `-` (or the length) appends. `("", body)` replaces the whole body.
        #[serde(default)]
        set: Vec<(String, Value)>,
    },
    /// Hold the request before handling it (before authentication, like [`FaultKind::Delay`])
    /// until the test releases the gate `name` ([`crate::Emulator::release`] or
    /// `POST /_emulator/holds/{name}/release`); then handle it normally, against the vault as it
    /// is then. [`crate::Emulator::wait_held`] waits until a request is held. A client that gives
    /// up meanwhile is recorded as `abandoned` and the request is never handled; on shutdown,
    /// held requests are abandoned (their connections closed without an answer).
    Hold {
        /// The gate's name, chosen by the test (case-sensitive).
        name: String,
    },
}

impl FaultKind {
    /// A [`FaultKind::Reshape`] that removes these members from the answer, e.g.
    /// `["/properties/networkAcls"]`.
    pub fn remove_fields(pointers: &[&str]) -> FaultKind {
        FaultKind::Reshape {
            remove: pointers.iter().map(|&pointer| pointer.to_owned()).collect(),
            null: Vec::new(),
            set: Vec::new(),
        }
    }

    /// A [`FaultKind::Reshape`] that makes these members of the answer `null`.
    pub fn null_fields(pointers: &[&str]) -> FaultKind {
        FaultKind::Reshape {
            remove: Vec::new(),
            null: pointers.iter().map(|&pointer| pointer.to_owned()).collect(),
            set: Vec::new(),
        }
    }

    /// A [`FaultKind::Reshape`] that sets one member of the answer, e.g.
    /// `("/properties/networkAcls/ipRules", json!([]))`.
    pub fn set_field(pointer: &str, value: Value) -> FaultKind {
        FaultKind::Reshape {
            remove: Vec::new(),
            null: Vec::new(),
            set: vec![(pointer.to_owned(), value)],
        }
    }

    /// A [`FaultKind::Reshape`] that replaces the whole body of the answer (status and headers
    /// kept), e.g. an ARM list `{"value":[…]}` or an error body answered with 200.
    pub fn replace_body(body: Value) -> FaultKind {
        FaultKind::set_field("", body)
    }

    /// A [`FaultKind::Hold`] on the gate `name`.
    pub fn hold(name: &str) -> FaultKind {
        FaultKind::Hold {
            name: name.to_owned(),
        }
    }

    /// Checks what serde cannot: every JSON Pointer of a [`FaultKind::Reshape`] is well formed.
    ///
    /// # Errors
    ///
    /// The first malformed pointer and why.
    pub fn check(&self) -> Result<(), String> {
        if let FaultKind::Reshape { remove, null, set } = self {
            let pointers = remove
                .iter()
                .chain(null)
                .chain(set.iter().map(|(pointer, _)| pointer));
            for pointer in pointers {
                crate::reshape::parse_pointer(pointer)?;
            }
        }
        Ok(())
    }
}

impl FaultKind {
    /// A short human-readable description, as stored in [`RequestRecord::fault`].
    pub fn describe(&self) -> String {
        match self {
            FaultKind::Status { status, code, .. } => format!("status {status} {code}"),
            FaultKind::Delay { ms } => format!("delay {ms}ms"),
            FaultKind::Drop => "drop connection".to_owned(),
            FaultKind::DropAfter => "drop connection after handling".to_owned(),
            FaultKind::EditAfter { add, remove } => {
                let mut edit: Vec<String> = add.iter().map(|rule| format!("+{rule}")).collect();
                edit.extend(remove.iter().map(|rule| format!("-{rule}")));
                format!("edit ip rules after: {}", edit.join(" "))
            }
            FaultKind::Reshape { remove, null, set } => {
                let shown = |pointer: &str| {
                    if pointer.is_empty() {
                        "(body)".to_owned()
                    } else {
                        pointer.to_owned()
                    }
                };
                let mut edits: Vec<String> = remove
                    .iter()
                    .map(|pointer| format!("-{}", shown(pointer)))
                    .collect();
                edits.extend(
                    null.iter()
                        .map(|pointer| format!("{}=null", shown(pointer))),
                );
                edits.extend(set.iter().map(|(pointer, value)| {
                    let mut value = value.to_string();
                    if value.len() > 60 {
                        let mut end = 57;
                        while !value.is_char_boundary(end) {
                            end -= 1;
                        }
                        value.truncate(end);
                        value.push_str("...");
                    }
                    format!("{}={value}", shown(pointer))
                }));
                format!("reshape answer: {}", edits.join(" "))
            }
            FaultKind::Hold { name } => format!("hold {name}"),
        }
    }
}

impl Fault {
    /// Whether this fault applies to a request on `route` for `vault` (lower-case).
    pub(crate) fn matches(&self, route: Route, vault: Option<&str>) -> bool {
        if self.count == 0 || route == Route::Control {
            return false;
        }
        if self.route.is_some_and(|wanted| wanted != route) {
            return false;
        }
        match &self.vault {
            None => true,
            Some(wanted) => vault.is_some_and(|name| name.eq_ignore_ascii_case(wanted)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_deserialise_from_the_documented_json_shapes() {
        let status: Fault = serde_json::from_str(
            r#"{"route":"VaultPatch","vault":"kv-prod","kind":{"Status":{"status":503,"code":"ServerBusy","message":"busy","retry_after":2}},"count":1}"#,
        )
        .unwrap();
        assert_eq!(status.route, Some(Route::VaultPatch));
        assert_eq!(status.kind.describe(), "status 503 ServerBusy");

        let drop: Fault = serde_json::from_str(r#"{"kind":"Drop","count":2}"#).unwrap();
        assert!(drop.route.is_none() && drop.vault.is_none());
        assert_eq!(drop.kind.describe(), "drop connection");

        let delay: Fault =
            serde_json::from_str(r#"{"kind":{"Delay":{"ms":5}},"count":1}"#).unwrap();
        assert_eq!(delay.kind.describe(), "delay 5ms");

        let drop_after: Fault = serde_json::from_str(r#"{"kind":"DropAfter","count":1}"#).unwrap();
        assert_eq!(drop_after.kind.describe(), "drop connection after handling");

        let edit: Fault = serde_json::from_str(
            r#"{"route":"VaultGet","kind":{"EditAfter":{"add":["52.174.99.1"],"remove":["20.37.158.0/23"]}},"count":1}"#,
        )
        .unwrap();
        assert_eq!(
            edit.kind.describe(),
            "edit ip rules after: +52.174.99.1 -20.37.158.0/23"
        );
        let add_only: Fault =
            serde_json::from_str(r#"{"kind":{"EditAfter":{"add":["1.2.3.4"]}},"count":1}"#)
                .unwrap();
        assert_eq!(add_only.kind.describe(), "edit ip rules after: +1.2.3.4");

        let reshape: Fault = serde_json::from_str(
            r#"{"route":"VaultGet","kind":{"Reshape":{"remove":["/properties/networkAcls/ipRules"],"null":["/properties/networkAcls"],"set":[["/properties/x",{"a":1}],["",[]]]}},"count":1}"#,
        )
        .unwrap();
        assert_eq!(
            reshape.kind.describe(),
            r#"reshape answer: -/properties/networkAcls/ipRules /properties/networkAcls=null /properties/x={"a":1} (body)=[]"#
        );
        let remove_only: Fault =
            serde_json::from_str(r#"{"kind":{"Reshape":{"remove":["/properties"]}},"count":1}"#)
                .unwrap();
        assert!(matches!(
            &remove_only.kind,
            FaultKind::Reshape { remove, null, set } if remove == &["/properties"] && null.is_empty() && set.is_empty()
        ));
        let long = FaultKind::replace_body(serde_json::json!({"value": ["x".repeat(100)]}));
        assert_eq!(long.describe().len(), "reshape answer: (body)=".len() + 60);

        let hold: Fault = serde_json::from_str(
            r#"{"route":"VaultPatch","kind":{"Hold":{"name":"before-patch"}},"count":1}"#,
        )
        .unwrap();
        assert_eq!(hold.kind.describe(), "hold before-patch");
    }

    #[test]
    fn reshape_pointers_are_checked() {
        assert!(
            FaultKind::remove_fields(&["/properties", "", "/a~1b/~0c/0/-"])
                .check()
                .is_ok()
        );
        for bad in ["properties", "/a~2", "/a~"] {
            let error = FaultKind::null_fields(&[bad]).check().unwrap_err();
            assert!(error.contains(bad), "{error}");
            assert!(FaultKind::set_field(bad, Value::Null).check().is_err());
        }
        assert!(FaultKind::hold("x").check().is_ok());
    }

    #[test]
    fn a_fault_matches_route_and_vault_case_insensitively() {
        let fault = Fault {
            route: Some(Route::VaultGet),
            vault: Some("KV-Prod".into()),
            kind: FaultKind::Drop,
            count: 1,
        };
        assert!(fault.matches(Route::VaultGet, Some("kv-prod")));
        assert!(!fault.matches(Route::VaultPatch, Some("kv-prod")));
        assert!(!fault.matches(Route::VaultGet, Some("kv-build")));
        assert!(!fault.matches(Route::VaultGet, None));
    }

    #[test]
    fn a_fault_without_route_never_matches_control_requests() {
        let fault = Fault {
            route: None,
            vault: None,
            kind: FaultKind::Drop,
            count: 1,
        };
        assert!(fault.matches(Route::Other, None));
        assert!(!fault.matches(Route::Control, None));
    }
}
