#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz targets into a directory (default: fuzz/seeds, ignored by
git). The committed corpora (fuzz/corpus/<target>) were grown from these seeds by fuzzing and
then minimised with `cargo fuzz cmin`; see fuzz/README.md.

Service Tags seeds are small hand-made documents plus small documents cut from the three real
files in tests/fixtures (a few tags, a few prefixes each, in both published formats, plain and
gzip); the envelope and Event Grid seeds are the payload shapes of tests/support/host.rs and of
the unit tests; the CIDR seeds are the rule cases of the unit tests.

Standard library only; deterministic (gzip with mtime 0).
"""

import gzip
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "tests", "fixtures")


def ms_style(doc):
    """Pretty-printed with CRLF, as Microsoft publishes the download file."""
    return json.dumps(doc, indent=2, ensure_ascii=False).replace("\n", "\r\n").encode()


def gz(data):
    return gzip.compress(data, compresslevel=9, mtime=0)


def fixture(change_number):
    path = os.path.join(FIXTURES, f"ServiceTags_Public.changeNumber-{change_number}.json.gz")
    with gzip.open(path) as f:
        return json.load(f)


def cut(doc, names, max_v4=4, max_v6=2):
    """The document with only the named tags, each with a few IPv4 and IPv6 prefixes."""
    by_name = {t["name"]: t for t in doc["values"]}
    values = []
    for name in names:
        tag = json.loads(json.dumps(by_name[name]))
        prefixes = tag["properties"]["addressPrefixes"]
        v4 = [p for p in prefixes if ":" not in p][:max_v4]
        v6 = [p for p in prefixes if ":" in p][:max_v6]
        tag["properties"]["addressPrefixes"] = v4 + v6
        values.append(tag)
    return {"changeNumber": doc["changeNumber"], "cloud": doc["cloud"], "values": values}


def as_api(doc, next_link=None):
    """The same tags as a Discovery API page."""
    values = []
    for tag in doc["values"]:
        p = tag["properties"]
        values.append({
            "name": tag["name"],
            "id": tag["id"],
            "properties": {
                "changeNumber": str(p["changeNumber"]),
                "region": p["region"],
                "state": "GA",
                "addressPrefixes": p["addressPrefixes"],
                "systemService": p["systemService"],
            },
        })
    page = {
        "name": "Public",
        "id": "/subscriptions/00000000-0000-0000-0000-000000000001/providers/Microsoft.Network/serviceTags/Public",
        "type": "Microsoft.Network/serviceTags",
        "changeNumber": str(doc["changeNumber"]),
        "cloud": doc["cloud"],
        "values": values,
    }
    if next_link is not None:
        page["nextLink"] = next_link
    return json.dumps(page, separators=(",", ":")).encode()


DOWNLOAD = """{
  "changeNumber": 365,
  "cloud": "Public",
  "values": [
    {
      "name": "AzureDevOps",
      "id": "AzureDevOps",
      "properties": {
        "changeNumber": 7,
        "region": "",
        "regionId": 0,
        "platform": "Azure",
        "systemService": "AzureDevOps",
        "addressPrefixes": ["20.37.158.0/23", "2603:1030:a07:15::3d2/127"],
        "networkFeatures": null
      }
    },
    {
      "name": "AzureCloud.westeurope",
      "id": "AzureCloud.westeurope",
      "properties": {
        "changeNumber": 160,
        "region": "westeurope",
        "regionId": 18,
        "platform": "Azure",
        "systemService": "",
        "addressPrefixes": ["4.175.0.0/16"],
        "networkFeatures": ["API", "NSG"]
      }
    }
  ]
}"""

API = """{"name":"public","id":"/subscriptions/s/providers/Microsoft.Network/serviceTags/public",
 "type":"Microsoft.Network/serviceTags","changeNumber":"63","cloud":"Public",
 "values":[{"name":"ApiManagement","id":"ApiManagement",
   "properties":{"changeNumber":"7","region":"","systemService":"AzureApiManagement",
     "addressPrefixes":["13.64.39.16/32","40.74.146.80/31","40.74.147.32/28"],"state":"GA"}}],
 "nextLink":"https://example.test/next?page=2"}"""


def service_tags_seeds():
    seeds = {
        "download": DOWNLOAD.encode(),
        "api": API.encode(),
        "minimal": b'{"changeNumber":1,"cloud":"Public","values":[{"name":"T","properties":{"changeNumber":1,"addressPrefixes":["1.2.3.0/24"]}}]}',
        "any_order": b'{"values":[{"properties":{"addressPrefixes":["1.2.3.0/24"],"future":{"x":[1,2]},"changeNumber":2},"name":"T"}],"cloud":"AzureGovernment","extra":null,"changeNumber":"9"}',
        "bom": b"\xef\xbb\xbf" + b'{"changeNumber":1,"cloud":"AzureChinaCloud","values":[{"name":"T","properties":{"changeNumber":"3","addressPrefixes":null}}]}',
        "escapes": '{"changeNumber":2,"cloud":"public","values":[{"name":"A\\u00e9\\n\\"q\\"\\/\\ud83d\\ude00é","id":"\\t","properties":{"changeNumber":0,"region":"west\\\\eu","systemService":"S\\b\\f\\r","addressPrefixes":["::/0","0.0.0.0/0","::ffff:1.2.3.4/128"]}}],"nextLink":null}'.encode(),
        "skipped_values": b'{"changeNumber":18446744073709551615,"cloud":"Public","x":[1,-0.5e+3,1E400,true,false,null,{"":[[[]]]},"\\u0000"],"values":[{"name":"T","properties":{"changeNumber":1,"regionId":-1,"networkFeatures":[],"addressPrefixes":[]}}],"nextLink":""}',
        "long_strings": ('{"changeNumber":1,"cloud":"Public","values":[{"name":"' + "x" * 70 + '\\"' + "y" * 60 + '\\\\","properties":{"changeNumber":1,"region":"' + "\\\\" * 40 + '","addressPrefixes":["2603:1030:a07:15::3d2/127","20.37.158.0/23"]}}]}').encode(),
        "two_values": b'{"changeNumber":1,"cloud":"Public","values":[{"name":"A","properties":{"changeNumber":1,"addressPrefixes":["1.2.3.0/24"]}}],"values":[{"name":"B","properties":{"changeNumber":1,"addressPrefixes":["1.2.4.0/24"]}}]}',
        "two_names": b'{"changeNumber":1,"cloud":"Public","values":[{"name":"A","properties":{"changeNumber":1,"addressPrefixes":["1.2.3.0/24"]},"name":"B"},{"name":"C","properties":{"changeNumber":1,"addressPrefixes":["1.2.5.0/24"]}}]}',
        "bad_prefix": DOWNLOAD.replace("4.175.0.0/16", "4.175.0.1/16").encode(),
        "bad_v6": DOWNLOAD.replace("2603:1030:a07:15::3d2/127", "2603:1030:a07:15::3d3/127").encode(),
        "duplicate": DOWNLOAD.replace('AzureCloud.westeurope",', 'azuredevops",').encode(),
        "truncated": DOWNLOAD[:-2].encode(),
        "nested": b'{"changeNumber":1,"cloud":"Public","deep":' + b"[" * 130 + b"]" * 130 + b',"values":[{"name":"T","properties":{"changeNumber":1,"addressPrefixes":["1.2.3.0/24"]}}]}',
    }
    real = {}
    for cn in (363, 364, 365):
        doc = fixture(cn)
        real[cn] = doc
        names = [t["name"] for t in doc["values"]]
        picks = [
            names[:3],
            ["AzureDevOps", "AzureCloud.westeurope"],
            [n for n in names if n.startswith("AzureCloud.")][:2],
            [names[len(names) // 2]],
            [t["name"] for t in doc["values"] if t["properties"].get("networkFeatures")][:2],
        ]
        for i, pick in enumerate(picks):
            if not pick:
                continue
            small = cut(doc, pick)
            seeds[f"real{cn}_{i}"] = ms_style(small)
            if cn == 365:
                seeds[f"real{cn}_{i}_api"] = as_api(small, "https://management.azure.com/next?page=2" if i == 0 else None)
    seeds["real365_0_gz"] = gz(seeds["real365_0"])
    seeds["real365_1_api_gz"] = gz(seeds["real365_1_api"])
    seeds["download_gz"] = gz(DOWNLOAD.encode())
    # Many small tags of the real file: the tag loop, the duplicate check, the prefix arena.
    many = cut(real[365], [t["name"] for t in real[365]["values"]][:40], max_v4=1, max_v6=1)
    seeds["real365_many"] = json.dumps(many, separators=(",", ":")).encode()
    return seeds


SUBSCRIPTION = "00000000-0000-0000-0000-000000000001"
VAULT = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-secrets/providers/Microsoft.KeyVault/vaults/kv-prod"


def vault_write_event(vault_id):
    return {
        "topic": f"/subscriptions/{SUBSCRIPTION}",
        "subject": vault_id.lower(),
        "eventType": "Microsoft.Resources.ResourceWriteSuccess",
        "eventTime": "2026-11-25T06:30:04.6117357Z",
        "id": "4db48cba-50a2-455a-93b4-de41a3b5b7f6",
        "data": {
            "authorization": {"scope": vault_id, "action": "Microsoft.KeyVault/vaults/write", "evidence": {"role": "Key Vault Contributor"}},
            "claims": {"appid": "11111111-2222-3333-4444-555555555555"},
            "correlationId": "c2a9b7c4-0000-0000-0000-000000000000",
            "httpRequest": {"clientRequestId": "x", "clientIpAddress": "203.0.113.9", "method": "PATCH", "url": f"https://management.azure.com{vault_id}?api-version=2023-07-01"},
            "resourceProvider": "Microsoft.KeyVault",
            "resourceUri": vault_id,
            "operationName": "Microsoft.KeyVault/vaults/write",
            "status": "Succeeded",
            "subscriptionId": SUBSCRIPTION,
            "tenantId": "00000000-0000-0000-0000-0000000000aa",
        },
        "dataVersion": "2",
        "metadataVersion": "1",
    }


def vault_write_cloud_event(vault_id):
    e = vault_write_event(vault_id)
    return {"specversion": "1.0", "type": e["eventType"], "source": e["topic"], "subject": e["subject"],
            "id": e["id"], "time": e["eventTime"], "data": e["data"]}


def compact(value):
    return json.dumps(value, separators=(",", ":")).encode()


def event_grid_seeds():
    storage = {"eventType": "Microsoft.Resources.ResourceWriteSuccess", "data": {"operationName": "Microsoft.Storage/storageAccounts/write", "resourceUri": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/st"}}
    return {
        "event": compact(vault_write_event(VAULT)),
        "cloud_event": compact(vault_write_cloud_event(VAULT)),
        "subject_only": compact({"eventType": "Microsoft.Resources.ResourceWriteSuccess", "subject": VAULT.lower() + "/"}),
        "storage": compact(storage),
        "delete": compact({"eventType": "Microsoft.Resources.ResourceDeleteSuccess", "subject": VAULT}),
        "no_type": compact({"data": {}}),
        "array": compact([vault_write_event(VAULT)]),
        "as_string": compact(json.dumps(vault_write_cloud_event(VAULT))),
    }


def sys_meta(method):
    return {"MethodName": method, "UtcNow": "2026-11-25T06:30:00.0036412Z", "RandGuid": "35e6e68c-5583-436c-a277-5aec2b416ba8"}


def envelope_seeds():
    timer = {"Data": {"timer": {"Schedule": {"AdjustForDST": True}, "ScheduleStatus": {"Last": "2026-11-18T06:30:00+00:00", "LastUpdated": "2026-11-18T06:30:00.12+00:00", "Next": "2026-11-25T06:30:00+00:00"}, "IsPastDue": False}},
             "Metadata": {"sys": sys_meta("function-timer")}}
    captured = b'{ "Data": { "timer": { "Schedule": { "AdjustForDST": true }, "ScheduleStatus": null, "IsPastDue": false } },\n  "Metadata": { "sys": { "MethodName": "azure", "UtcNow": "2023-09-07T11:40:45.004275Z", "RandGuid": "35e6e68c-5583-436c-a277-5aec2b416ba8" } } }'
    query = {"vault": "kv-a,kv-b", "dryRun": "true"}
    http = {"Data": {"req": {
        "Url": "https://func-tagfence.azurewebsites.net/api/sync?vault=kv-a,kv-b&dryRun=true", "Method": "POST", "Query": query,
        "Headers": {"Accept": ["application/json"], "x-functions-key": ["<redacted>"]},
        "Params": {"action": "sync"},
        "Identities": [{"AuthenticationType": "WebJobsAuthLevel", "IsAuthenticated": True, "Claims": [{"Type": "http://schemas.microsoft.com/2017/07/functions/claims/authlevel", "Value": "Function"}]}]}},
        "Metadata": {"action": "sync", "Query": query, "sys": sys_meta("function-http")}}
    http_string_query = {"data": {"req": {"url": "https://app/api/Status", "method": "GET", "query": "{\"Vault\":[\"kv-a\",\"kv-b\"]}", "body": "{}"}}, "metadata": {}}
    event = vault_write_event(VAULT)
    event_object = {"Data": {"event": event}, "Metadata": {"data": event["data"], "sys": sys_meta("function-eventgrid")}}
    event_string = {"Data": {"event": json.dumps(vault_write_cloud_event(VAULT))}, "Metadata": {"sys": sys_meta("function-eventgrid")}}
    return {
        "timer": compact(timer),
        "timer_captured": captured,
        "http": compact(http),
        "http_string_query": compact(http_string_query),
        "event_object": compact(event_object),
        "event_string": compact(event_string),
        "binding_string": b'{"Data": {"event": "{\\"eventType\\": \\"X\\"}"}, "Metadata": {}}',
        "empty": b"{}",
    }


def cidr_seeds():
    rules = ["20.37.158.0/23", "40.74.28.1", " 40.74.28.1/32 ", "0.0.0.0/0", "20.37.158.1/23", "20.37.158.0/33",
             "20.37.158/24", "020.37.158.0/24", "20.37.158.0/024", "256.1.1.1", "1.2.3.4/", "",
             "2603:1030:a07:15::3d2/127", "10.0.0.1", "52.1.2.3/24", "::1", "::ffff:1.2.3.4", "1:2:3:4:5:6:7::",
             "fe80::1/64", "100.64.0.0/10", "96.0.0.0/3", "255.255.255.255/32", "172.31.255.255"]
    seeds = {f"rule{i}": r.encode() for i, r in enumerate(rules)}
    seeds["set"] = "\n".join(["10.0.0.0/8", "8.0.0.0/6", "20.0.0.0/24", "1.2.3.0/25", "1.2.3.128/25", "224.0.0.1", "198.18.0.0/15"]).encode()
    seeds["set_all"] = b"0.0.0.0/0\n128.0.0.0/1\n"
    return seeds


def main():
    out = sys_argv_out()
    for target, seeds in (("service_tags", service_tags_seeds()), ("envelope", envelope_seeds()),
                          ("event_grid", event_grid_seeds()), ("cidr", cidr_seeds())):
        folder = os.path.join(out, target)
        os.makedirs(folder, exist_ok=True)
        for name, data in seeds.items():
            with open(os.path.join(folder, name), "wb") as f:
                f.write(data)
        print(f"{target}: {len(seeds)} seeds, {sum(map(len, seeds.values()))} bytes")


def sys_argv_out():
    return sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "seeds")


if __name__ == "__main__":
    main()
