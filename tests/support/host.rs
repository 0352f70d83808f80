//! A double of the Azure Functions host, since the real host cannot run offline (the npm package
//! `azure-functions-core-tools` only downloads it from cdn.functions.azure.com on install). It does
//! what the host does to a custom handler:
//! - starts the real `tagfence` binary with `serve`, the host's environment
//!   (`FUNCTIONS_CUSTOMHANDLER_PORT`, `FUNCTIONS_CUSTOMHANDLER_WORKER_ID`,
//!   `FUNCTIONS_APP_ROOT_PATH`, `FUNCTIONS_WORKER_RUNTIME`) and the app settings;
//! - polls `GET /` every 25 ms until any HTTP answer (the host's `IsWorkerReady`), for at most
//!   60 s;
//! - reads the function folders' `function.json` for the binding names;
//! - POSTs invocations as chunked JSON (no Content-Length) with the host's headers;
//! - holds the answers to the contract: a 2xx must be a JSON object with `Outputs`, `Logs`,
//!   `ReturnValue`, with a JSON content type and a non-empty body (the host reads it with
//!   `ReadAsAsync`);
//! - collects stdout and stderr, so tests can require JSON logs on stdout and nothing routine
//!   on stderr (the host logs stderr lines as errors);
//! - stops the worker with SIGTERM, as the host does.

use std::collections::HashMap;
use std::net::TcpListener as StdListener;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;

use super::repo;

pub const HOST_VERSION: &str = "4.1044.400.0";

/// The answer to one invocation, as the host sees it.
#[derive(Debug)]
pub struct Invocation {
    pub status: u16,
    pub content_type: String,
    pub body: Value,
    pub invocation_id: String,
}

impl Invocation {
    /// Whether the host would count the invocation as succeeded.
    pub fn succeeded(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// `Outputs.res` of an HTTP invocation: (status code, parsed body).
    pub fn http_response(&self) -> (u16, Value) {
        let res = &self.body["Outputs"]["res"];
        let status = res["statusCode"]
            .as_u64()
            .or_else(|| res["statusCode"].as_str().and_then(|s| s.parse().ok()))
            .expect("statusCode") as u16;
        let body = match &res["body"] {
            Value::String(text) => {
                serde_json::from_str(text).unwrap_or(Value::String(text.clone()))
            }
            other => other.clone(),
        };
        (status, body)
    }
}

/// A running worker under the host double.
pub struct HostDouble {
    child: Child,
    pub port: u16,
    pub ready_after: Duration,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    client: reqwest::Client,
    /// Trigger binding name per function folder, from its function.json.
    pub bindings: HashMap<String, String>,
    next_invocation: u32,
}

fn free_port() -> u16 {
    let listener = StdListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().unwrap().port()
}

fn read_bindings() -> HashMap<String, String> {
    ["function-timer", "function-http", "function-eventgrid"]
        .into_iter()
        .map(|folder| {
            let text = std::fs::read_to_string(repo(&format!("{folder}/function.json")))
                .expect("function.json present");
            let doc: Value = serde_json::from_str(&text).expect("function.json is JSON");
            let trigger = doc["bindings"]
                .as_array()
                .unwrap()
                .iter()
                .find(|b| b["direction"] == "in")
                .expect("a trigger binding");
            (
                folder.to_owned(),
                trigger["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

impl HostDouble {
    /// Starts `tagfence serve` with these app settings and waits for readiness.
    pub async fn start(app_settings: &[(String, String)]) -> HostDouble {
        let port = free_port();
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_tagfence"));
        command
            .arg("serve")
            .current_dir(repo(""))
            .env_clear()
            .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
            .env(
                "FUNCTIONS_CUSTOMHANDLER_WORKER_ID",
                "4b0c1a52-6d4b-4a8e-9b1f-2f0d3e6c7a11",
            )
            .env("FUNCTIONS_APP_ROOT_PATH", repo("").display().to_string())
            .env("FUNCTIONS_WORKER_RUNTIME", "custom")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(path) = std::env::var_os("PATH") {
            command.env("PATH", path);
        }
        for (key, value) in app_settings {
            command.env(key, value);
        }
        let started = Instant::now();
        let mut child = command.spawn().expect("tagfence serve starts");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        for (stream, sink) in [
            (
                Box::new(child.stdout.take().unwrap())
                    as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
                stdout.clone(),
            ),
            (Box::new(child.stderr.take().unwrap()), stderr.clone()),
        ] {
            tokio::spawn(async move {
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    sink.lock().unwrap().push(line);
                }
            });
        }
        let client = reqwest::Client::builder().build().unwrap();
        // Readiness: GET / every 25 ms; any HTTP answer counts, socket errors mean "not yet".
        let ready_after = loop {
            if client
                .get(format!("http://127.0.0.1:{port}/"))
                .send()
                .await
                .is_ok()
            {
                break started.elapsed();
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "tagfence serve exited with {status} before it was ready; stderr: {:?}",
                    stderr.lock().unwrap()
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "not ready within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        };
        // Make sure the answer came from this worker and not from another process that happens
        // to hold the port (the free-port pick is racy across parallel tests): it logs that it
        // is serving right after binding, or exits if the port was taken.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !stdout
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("tagfence serving"))
        {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "tagfence serve exited with {status}; stderr: {:?}",
                    stderr.lock().unwrap()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the worker never logged that it was serving"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        HostDouble {
            child,
            port,
            ready_after,
            stdout,
            stderr,
            client,
            bindings: read_bindings(),
            next_invocation: 0,
        }
    }

    /// POSTs an invocation envelope to `/{function}` as the host does and checks the answer
    /// against the contract.
    pub async fn invoke_raw(&mut self, function: &str, body: Vec<u8>) -> Invocation {
        self.try_invoke_raw(function, body)
            .await
            .expect("the worker answers")
    }

    /// As [`HostDouble::invoke_raw`], but a transport failure (the worker closed the
    /// connection, e.g. on an oversized body) is returned rather than a panic.
    pub async fn try_invoke_raw(
        &mut self,
        function: &str,
        body: Vec<u8>,
    ) -> Result<Invocation, String> {
        self.next_invocation += 1;
        let invocation_id = format!("7f3e4d2c-1b0a-4e5f-8a9b-{:012x}", self.next_invocation);
        self.send(function, body, invocation_id).await
    }

    /// As [`HostDouble::try_invoke_raw`] with an invocation id of the caller's, through a shared
    /// reference: the host sends invocations concurrently (timer, HTTP, Event Grid at once).
    pub async fn invoke_concurrently(
        &self,
        function: &str,
        body: Vec<u8>,
        number: u32,
    ) -> Result<Invocation, String> {
        let invocation_id = format!("0c0c0c0c-1b0a-4e5f-8a9b-{number:012x}");
        self.send(function, body, invocation_id).await
    }

    async fn send(
        &self,
        function: &str,
        body: Vec<u8>,
        invocation_id: String,
    ) -> Result<Invocation, String> {
        // A stream body: reqwest sends it chunked, without Content-Length, like the host.
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            body.chunks(512).map(|c| Ok(c.to_vec())).collect();
        let response = self
            .client
            .post(format!("http://127.0.0.1:{}/{function}", self.port))
            .header("x-azure-functions-hostversion", HOST_VERSION)
            .header("x-azure-functions-invocationid", &invocation_id)
            .header("user-agent", format!("Azure-Functions-Host/{HOST_VERSION}"))
            .header(
                "traceparent",
                "00-bb2bd5eef54cb15a1506d0326d2489e7-d3f54c84c7034d76-00",
            )
            .header("content-type", "application/json; charset=utf-8")
            .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
            .timeout(Duration::from_secs(120))
            .send()
            .await
            .map_err(|e| format!("{e:?}"))?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let bytes = response.bytes().await.map_err(|e| format!("{e:?}"))?;
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            // The host reads a 2xx with ReadAsAsync: JSON media type, JSON object body
            // (`DefaultHttpWorkerService.cs`).
            assert!(
                content_type.starts_with("application/json"),
                "2xx without a JSON content type: {content_type}"
            );
            assert!(
                !bytes.is_empty(),
                "2xx with an empty body would hang the host"
            );
            let object = body.as_object().unwrap_or_else(|| {
                panic!(
                    "2xx body is not a JSON object: {}",
                    String::from_utf8_lossy(&bytes)
                )
            });
            let keys: Vec<String> = object.keys().map(|k| k.to_ascii_lowercase()).collect();
            for key in ["outputs", "logs", "returnvalue"] {
                assert!(keys.contains(&key.to_owned()), "answer lacks {key}: {body}");
            }
            assert!(
                body["Outputs"].is_object(),
                "Outputs is not an object: {body}"
            );
            assert!(
                body["Logs"]
                    .as_array()
                    .is_some_and(|l| l.iter().all(Value::is_string)),
                "Logs is not an array of strings: {body}"
            );
        } else {
            // A failure still carries a JSON body for the operator.
            assert!(
                body.is_object(),
                "a failed invocation without a JSON body: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        Ok(Invocation {
            status,
            content_type,
            body,
            invocation_id,
        })
    }

    fn sys(method: &str) -> Value {
        json!({"MethodName": method, "UtcNow": "2026-11-25T06:30:00.0036412Z", "RandGuid": "35e6e68c-5583-436c-a277-5aec2b416ba8"})
    }

    /// The timer's invocation (payload as captured from host 4.24.4.4 by
    /// DFE-Digital/service-security-posture-hardening).
    pub async fn invoke_timer(&mut self, past_due: bool) -> Invocation {
        let body = self.timer_envelope(past_due);
        self.invoke_raw("function-timer", body).await
    }

    /// The envelope of the timer's invocation.
    pub fn timer_envelope(&self, past_due: bool) -> Vec<u8> {
        let binding = self.bindings["function-timer"].clone();
        let body = json!({
            "Data": {binding: {"Schedule": {"AdjustForDST": true}, "ScheduleStatus": {"Last": "2026-11-18T06:30:00+00:00", "LastUpdated": "2026-11-18T06:30:00.12+00:00", "Next": "2026-11-25T06:30:00+00:00"}, "IsPastDue": past_due}},
            "Metadata": {"sys": Self::sys("function-timer")}
        });
        serde_json::to_vec(&body).unwrap()
    }

    /// The envelope of one Event Grid event, as an object.
    pub fn event_envelope(&self, event: &Value) -> Vec<u8> {
        let binding = self.bindings["function-eventgrid"].clone();
        let body = json!({
            "Data": {binding: event},
            "Metadata": {"data": event["data"], "sys": Self::sys("function-eventgrid")}
        });
        serde_json::to_vec(&body).unwrap()
    }

    /// An HTTP request through the default (wrapped) mode (`GetRequestAsJObject`).
    pub async fn invoke_http(
        &mut self,
        method: &str,
        action: &str,
        query: &[(&str, &str)],
    ) -> Invocation {
        let binding = self.bindings["function-http"].clone();
        let query_string: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let url = format!(
            "https://func-tagfence.azurewebsites.net/api/{action}{}{}",
            if query.is_empty() { "" } else { "?" },
            query_string.join("&")
        );
        let query_object: serde_json::Map<String, Value> = query
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        let body = json!({
            "Data": {binding: {
                "Url": url, "Method": method, "Query": query_object,
                "Headers": {"Accept": ["application/json"], "x-functions-key": ["<redacted>"]},
                "Params": {"action": action},
                "Identities": [{"AuthenticationType": "WebJobsAuthLevel", "IsAuthenticated": true, "Claims": [{"Type": "http://schemas.microsoft.com/2017/07/functions/claims/authlevel", "Value": "Function"}]}]
            }},
            "Metadata": {"action": action, "Query": query_object, "sys": Self::sys("function-http")}
        });
        self.invoke_raw("function-http", serde_json::to_vec(&body).unwrap())
            .await
    }

    /// One Event Grid event, as the Event Grid extension dispatches it (`HttpRequestProcessor.cs`
    /// in Azure/azure-sdk-for-net): the event as an object, or (`as_string`) serialised as a JSON
    /// string.
    pub async fn invoke_event(&mut self, event: &Value, as_string: bool) -> Invocation {
        let binding = self.bindings["function-eventgrid"].clone();
        let value = if as_string {
            Value::String(event.to_string())
        } else {
            event.clone()
        };
        let body = json!({
            "Data": {binding: value},
            "Metadata": {"data": event["data"], "sys": Self::sys("function-eventgrid")}
        });
        self.invoke_raw("function-eventgrid", serde_json::to_vec(&body).unwrap())
            .await
    }

    /// The Event Grid function with `Data.<binding>` exactly `value`: a batch (an array of
    /// events), an event inside several layers of JSON text, or anything else the host might
    /// hand over.
    pub async fn invoke_event_data(&mut self, value: Value) -> Invocation {
        let binding = self.bindings["function-eventgrid"].clone();
        let body = json!({
            "Data": {binding: value},
            "Metadata": {"sys": Self::sys("function-eventgrid")}
        });
        self.invoke_raw("function-eventgrid", serde_json::to_vec(&body).unwrap())
            .await
    }

    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// Whether the worker process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM and waits for the exit code.
    pub async fn stop(mut self) -> Option<i32> {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
        let status = tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .ok()?
            .ok()?;
        // Let the output readers drain.
        tokio::time::sleep(Duration::from_millis(50)).await;
        status.code()
    }
}

/// A `Microsoft.Resources.ResourceWriteSuccess` event for a vault, Event Grid schema
/// (learn.microsoft.com/azure/event-grid/event-schema-subscriptions).
pub fn vault_write_event(vault_id: &str) -> Value {
    json!({
        "topic": format!("/subscriptions/{}", super::SUBSCRIPTION),
        "subject": vault_id.to_ascii_lowercase(),
        "eventType": "Microsoft.Resources.ResourceWriteSuccess",
        "eventTime": "2026-11-25T06:30:04.6117357Z",
        "id": "4db48cba-50a2-455a-93b4-de41a3b5b7f6",
        "data": {
            "authorization": {"scope": vault_id, "action": "Microsoft.KeyVault/vaults/write", "evidence": {"role": "Key Vault Contributor"}},
            "claims": {"appid": "11111111-2222-3333-4444-555555555555"},
            "correlationId": "c2a9b7c4-0000-0000-0000-000000000000",
            "httpRequest": {"clientRequestId": "x", "clientIpAddress": "203.0.113.9", "method": "PATCH", "url": format!("https://management.azure.com{vault_id}?api-version=2023-07-01")},
            "resourceProvider": "Microsoft.KeyVault",
            "resourceUri": vault_id,
            "operationName": "Microsoft.KeyVault/vaults/write",
            "status": "Succeeded",
            "subscriptionId": super::SUBSCRIPTION,
            "tenantId": "00000000-0000-0000-0000-0000000000aa"
        },
        "dataVersion": "2",
        "metadataVersion": "1"
    })
}

/// The same event in the CloudEvents 1.0 schema.
pub fn vault_write_cloud_event(vault_id: &str) -> Value {
    let event = vault_write_event(vault_id);
    json!({
        "specversion": "1.0",
        "type": event["eventType"],
        "source": event["topic"],
        "subject": event["subject"],
        "id": event["id"],
        "time": event["eventTime"],
        "data": event["data"],
    })
}
