//! A small Azure Resource Graph: enough KQL to discover tagged vaults, storage accounts and
//! container registries (request and response as in the 2024-04-01 `resourcegraph.json`
//! examples of Azure/azure-rest-api-specs).
//!
//! tagfence may discover the vaults it manages with a query such as
//! `resources | where type =~ 'microsoft.keyvault/vaults' | where tags['tagfence'] =~ 'on' |
//! project id, name, resourceGroup, subscriptionId, location, tags, networkAcls = properties.networkAcls`.
//! Real KQL is far larger; this module implements the subset such discovery queries use and
//! answers anything else with 400, so an unsupported query fails loudly instead of returning wrong
//! rows. Supported: the `resources` table; `where` with `and`-joined comparisons (`==`, `=~`, `!=`,
//! `!~`, `in`, `in~`, `!in`, `!in~`, `contains`, `!contains`, `has`, `!has`, `isempty()`,
//! `isnotempty()`); `project` and `extend` with `alias = path`; `order by`/`sort by`;
//! `limit`/`take`; `count`; `summarize [name =] count() [by column, …]`. Paths are a
//! column followed by `.key`, `['key']` or `["key"]` accessors, optionally wrapped in
//! `tostring()`; a path the row does not have projects as `null`, as in Resource Graph. Rows are
//! the resources of every kind the caller may read (forbidden ones are left out, as Resource
//! Graph only returns resources the principal can read), `type` lower-cased
//! (`microsoft.keyvault/vaults`, `microsoft.storage/storageaccounts`,
//! `microsoft.containerregistry/registries`), sorted by id; paging uses `$top`, `$skip` and an
//! opaque `$skipToken`. tagfence's discovery of all three kinds reads, for example,
//! `resources | where type in~ ('microsoft.keyvault/vaults', 'microsoft.storage/storageaccounts',
//! 'microsoft.containerregistry/registries') | where isnotempty(tags['tagfence']) | project id,
//! name, type, location, subscriptionId, value = tostring(tags['tagfence']), tags, networkAcls =
//! properties.networkAcls, networkRuleSet = properties.networkRuleSet, publicNetworkAccess =
//! properties.publicNetworkAccess`.

use serde_json::{json, Map, Value};

use crate::paths::{Kind, ResourcePath};

/// Rows per page when the request gives no `$top`.
const DEFAULT_TOP: usize = 100;
/// The most rows one page may hold.
const MAX_TOP: usize = 1000;

/// A request body: `{subscriptions? | managementGroups?, query, options?: {$top, $skip,
/// $skipToken}}`.
pub(crate) struct GraphRequest {
    subscriptions: Option<Vec<String>>,
    management_groups: Option<Vec<String>>,
    query: Vec<Stage>,
    top: usize,
    offset: usize,
}

/// Parses the request body; `Err` holds a message for a 400.
pub(crate) fn parse_request(body: &Value) -> Result<GraphRequest, String> {
    let query = body
        .get("query")
        .and_then(Value::as_str)
        .ok_or("the request body needs a string \"query\"")?;
    let subscriptions = match body.get("subscriptions") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .map(|item| item.as_str().map(str::to_ascii_lowercase))
                .collect::<Option<Vec<_>>>()
                .ok_or("\"subscriptions\" must be an array of strings")?,
        ),
        Some(_) => return Err("\"subscriptions\" must be an array of strings".to_owned()),
    };
    let management_groups = match body.get("managementGroups") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .map(|item| item.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or("\"managementGroups\" must be an array of strings")?,
        ),
        Some(_) => return Err("\"managementGroups\" must be an array of strings".to_owned()),
    };
    if subscriptions.is_some() && management_groups.is_some() {
        return Err("give either \"subscriptions\" or \"managementGroups\", not both".to_owned());
    }
    let options = body.get("options").cloned().unwrap_or(Value::Null);
    let top = match options.get("$top") {
        None | Some(Value::Null) => DEFAULT_TOP,
        Some(value) => value
            .as_u64()
            .and_then(|top| usize::try_from(top).ok())
            .filter(|top| (1..=MAX_TOP).contains(top))
            .ok_or(format!("options.$top must be between 1 and {MAX_TOP}"))?,
    };
    let mut offset = match options.get("$skip") {
        None | Some(Value::Null) => 0,
        Some(value) => value
            .as_u64()
            .and_then(|skip| usize::try_from(skip).ok())
            .ok_or("options.$skip must be a non-negative integer")?,
    };
    if let Some(token) = options.get("$skipToken").filter(|token| !token.is_null()) {
        offset = token
            .as_str()
            .and_then(|token| token.strip_prefix("tfemu-skip-"))
            .and_then(|number| number.parse().ok())
            .ok_or("options.$skipToken is not a token this service issued")?;
    }
    Ok(GraphRequest {
        subscriptions,
        management_groups,
        query: parse_query(query)?,
        top,
        offset,
    })
}

impl GraphRequest {
    /// Turns a `managementGroups` scope into the subscriptions under the groups; `Err` names an
    /// unknown group.
    pub(crate) fn resolve_management_groups<'a>(
        &mut self,
        under: impl Fn(&str) -> Option<&'a [String]>,
    ) -> Result<(), String> {
        let Some(groups) = &self.management_groups else {
            return Ok(());
        };
        let mut subscriptions = Vec::new();
        for group in groups {
            let ids =
                under(group).ok_or_else(|| format!("management group '{group}' was not found"))?;
            subscriptions.extend(ids.iter().map(|id| id.to_ascii_lowercase()));
        }
        self.subscriptions = Some(subscriptions);
        Ok(())
    }
}

/// Runs a request over `resources` and returns the response body.
pub(crate) fn run<'a>(
    request: &GraphRequest,
    resources: impl Iterator<Item = (&'a ResourcePath, &'a Value)>,
) -> Value {
    let mut rows: Vec<Map<String, Value>> = resources
        .filter(|(path, _)| {
            request.subscriptions.as_ref().is_none_or(|subscriptions| {
                subscriptions.contains(&path.subscription.to_ascii_lowercase())
            })
        })
        .map(|(path, resource)| row(path, resource))
        .collect();
    rows.sort_by_key(|row| {
        row.get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_ascii_lowercase()
    });
    for stage in &request.query {
        rows = stage.apply(rows);
    }
    let total = rows.len();
    let page: Vec<Value> = rows
        .into_iter()
        .skip(request.offset)
        .take(request.top)
        .map(Value::Object)
        .collect();
    let end = request.offset.saturating_add(page.len());
    let mut body = json!({
        "totalRecords": total,
        "count": page.len(),
        "resultTruncated": "false",
        "facets": [],
        "data": page,
    });
    if end < total {
        body["$skipToken"] = Value::String(format!("tfemu-skip-{end}"));
    }
    body
}

/// The Resource Graph row of a resource: ARM's shape plus the derived columns, `type`
/// lower-cased (Resource Graph's form: public queries use `microsoft.storage/storageaccounts`;
/// `microsoft.containerregistry/registries` is UNVERIFIED, read from the spec's type name). A vault's `sku` is `properties.sku` (Key Vault keeps it there); a storage
/// account's and a registry's is the top-level `sku`, and `kind` the top-level `kind` (a storage
/// account's `StorageV2`, …). Resource Graph's `tenantId` is the subscription's tenant, which the
/// emulator knows only for vaults (`properties.tenantId`; `null` otherwise: UNVERIFIED).
fn row(path: &ResourcePath, resource: &Value) -> Map<String, Value> {
    let field = |key: &str| resource.get(key).cloned().unwrap_or(Value::Null);
    let pointer = |pointer: &str| resource.pointer(pointer).cloned().unwrap_or(Value::Null);
    let mut row = Map::new();
    row.insert("id".into(), field("id"));
    row.insert("name".into(), field("name"));
    row.insert(
        "type".into(),
        json!(path.kind.type_name().to_ascii_lowercase()),
    );
    row.insert("tenantId".into(), pointer("/properties/tenantId"));
    row.insert(
        "kind".into(),
        resource
            .get("kind")
            .filter(|kind| kind.is_string())
            .cloned()
            .unwrap_or_else(|| json!("")),
    );
    row.insert("location".into(), field("location"));
    row.insert(
        "resourceGroup".into(),
        json!(path.resource_group.to_ascii_lowercase()),
    );
    row.insert("subscriptionId".into(), json!(path.subscription));
    row.insert("managedBy".into(), json!(""));
    row.insert(
        "sku".into(),
        match path.kind {
            Kind::Vault => pointer("/properties/sku"),
            Kind::StorageAccount | Kind::Registry => field("sku"),
        },
    );
    row.insert("plan".into(), Value::Null);
    row.insert("properties".into(), field("properties"));
    row.insert(
        "tags".into(),
        resource.get("tags").cloned().unwrap_or_else(|| json!({})),
    );
    row.insert("identity".into(), field("identity"));
    row.insert("zones".into(), Value::Null);
    row.insert("extendedLocation".into(), Value::Null);
    row
}

// ---------------------------------------------------------------------------------------------
// Query language subset.

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Ident(String),
    Str(String),
    Number(u64),
    Punct(&'static str),
}

const PUNCTS: [&str; 13] = [
    "==", "=~", "!=", "!~", "|", "(", ")", ",", ".", "[", "]", "=", "~",
];

fn tokenize(query: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = query.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '\'' || c == '"' {
            let (text, end) = string_literal(&chars, i)?;
            tokens.push(Token::Str(text));
            i = end;
        } else if c.is_ascii_digit() {
            let start = i;
            while chars.get(i).is_some_and(char::is_ascii_digit) {
                i += 1;
            }
            let text: String = chars[start..i].iter().collect();
            tokens.push(Token::Number(
                text.parse()
                    .map_err(|_| format!("number {text} is too large"))?,
            ));
        } else if c.is_alphabetic() || c == '_' || c == '$' {
            let start = i;
            while chars
                .get(i)
                .is_some_and(|ch| ch.is_alphanumeric() || *ch == '_' || *ch == '$')
            {
                i += 1;
            }
            tokens.push(Token::Ident(chars[start..i].iter().collect()));
        } else if c == '!' && chars.get(i + 1).is_some_and(|ch| ch.is_alphabetic()) {
            // `!in`, `!contains`: keep the bang on the identifier.
            let start = i;
            i += 1;
            while chars.get(i).is_some_and(|ch| ch.is_alphanumeric()) {
                i += 1;
            }
            tokens.push(Token::Ident(chars[start..i].iter().collect()));
        } else {
            let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
            let punct = PUNCTS
                .iter()
                .find(|p| rest.starts_with(**p))
                .ok_or_else(|| format!("unexpected character '{c}'"))?;
            tokens.push(Token::Punct(punct));
            i += punct.len();
        }
    }
    Ok(tokens)
}

/// The quoted string literal whose opening quote (`'` or `"`) is `chars[start]`: its text, with
/// each `\` taking the next character as is, and the index just after the closing quote.
fn string_literal(chars: &[char], start: usize) -> Result<(String, usize), String> {
    let quote = chars[start];
    let mut text = String::new();
    let mut i = start + 1;
    loop {
        match chars.get(i) {
            None => return Err("unterminated string literal".to_owned()),
            Some('\\') => {
                if let Some(escaped) = chars.get(i + 1) {
                    text.push(*escaped);
                }
                i += 2;
            }
            Some(ch) if *ch == quote => return Ok((text, i + 1)),
            Some(ch) => {
                text.push(*ch);
                i += 1;
            }
        }
    }
}

#[derive(Clone, Debug)]
struct Path {
    column: String,
    keys: Vec<String>,
}

impl Path {
    fn lookup<'a>(&self, row: &'a Map<String, Value>) -> Option<&'a Value> {
        let mut value = row.get(&self.column).or_else(|| {
            row.iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(&self.column))
                .map(|(_, value)| value)
        })?;
        for key in &self.keys {
            value = value.get(key)?;
        }
        Some(value)
    }

    /// The column name `project path` produces: the last key, or the column.
    fn default_name(&self) -> String {
        self.keys.last().unwrap_or(&self.column).clone()
    }
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Equal { ignore_case: bool, negate: bool },
    In { ignore_case: bool, negate: bool },
    Contains { negate: bool },
    Has { negate: bool },
    Empty { negate: bool },
}

#[derive(Debug)]
struct Condition {
    path: Path,
    op: Op,
    values: Vec<String>,
}

#[derive(Debug)]
struct Column {
    name: String,
    path: Path,
}

#[derive(Debug)]
enum Stage {
    Where(Vec<Condition>),
    Project(Vec<Column>),
    Extend(Vec<Column>),
    Order(Vec<(Path, bool)>),
    Limit(usize),
    /// `count`: one row, `{"Count": n}`.
    Count,
    /// `summarize [name =] count() [by column, …]`: one row per group, the group's columns
    /// and the count (named `count_` unless named).
    Summarize {
        name: String,
        by: Vec<Column>,
    },
}

impl Stage {
    fn apply(&self, rows: Vec<Map<String, Value>>) -> Vec<Map<String, Value>> {
        match self {
            Stage::Where(conditions) => rows
                .into_iter()
                .filter(|row| conditions.iter().all(|condition| condition.holds(row)))
                .collect(),
            Stage::Project(columns) => rows
                .iter()
                .map(|row| {
                    columns
                        .iter()
                        .map(|column| {
                            let value = column.path.lookup(row).cloned().unwrap_or(Value::Null);
                            (column.name.clone(), value)
                        })
                        .collect()
                })
                .collect(),
            Stage::Extend(columns) => rows
                .into_iter()
                .map(|mut row| {
                    for column in columns {
                        let value = column.path.lookup(&row).cloned().unwrap_or(Value::Null);
                        row.insert(column.name.clone(), value);
                    }
                    row
                })
                .collect(),
            Stage::Order(keys) => {
                let mut rows = rows;
                rows.sort_by(|a, b| {
                    keys.iter()
                        .map(|(path, descending)| {
                            let ordering = text_of(path.lookup(a)).cmp(&text_of(path.lookup(b)));
                            if *descending {
                                ordering.reverse()
                            } else {
                                ordering
                            }
                        })
                        .find(|ordering| ordering.is_ne())
                        .unwrap_or(std::cmp::Ordering::Equal)
                });
                rows
            }
            Stage::Limit(limit) => rows.into_iter().take(*limit).collect(),
            Stage::Count => {
                let mut row = Map::new();
                row.insert("Count".to_owned(), json!(rows.len()));
                vec![row]
            }
            Stage::Summarize { name, by } => {
                let mut groups: Vec<(Vec<Value>, usize)> = Vec::new();
                for row in &rows {
                    let key: Vec<Value> = by
                        .iter()
                        .map(|column| column.path.lookup(row).cloned().unwrap_or(Value::Null))
                        .collect();
                    match groups.iter_mut().find(|(seen, _)| *seen == key) {
                        Some((_, count)) => *count += 1,
                        None => groups.push((key, 1)),
                    }
                }
                if by.is_empty() && groups.is_empty() {
                    groups.push((Vec::new(), 0));
                }
                groups
                    .into_iter()
                    .map(|(key, count)| {
                        let mut row: Map<String, Value> = by
                            .iter()
                            .map(|column| column.name.clone())
                            .zip(key)
                            .collect();
                        row.insert(name.clone(), json!(count));
                        row
                    })
                    .collect()
            }
        }
    }
}

/// The text KQL compares: strings as they are, scalars printed, null/missing as empty.
fn text_of(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
    }
}

impl Condition {
    fn holds(&self, row: &Map<String, Value>) -> bool {
        let value = self.path.lookup(row);
        let text = text_of(value);
        let same = |wanted: &String, ignore_case: bool| {
            if ignore_case {
                text.eq_ignore_ascii_case(wanted)
            } else {
                text == *wanted
            }
        };
        match self.op {
            Op::Equal {
                ignore_case,
                negate,
            } => self.values.iter().any(|wanted| same(wanted, ignore_case)) != negate,
            Op::In {
                ignore_case,
                negate,
            } => self.values.iter().any(|wanted| same(wanted, ignore_case)) != negate,
            Op::Contains { negate } => {
                let haystack = text.to_lowercase();
                self.values
                    .iter()
                    .any(|needle| haystack.contains(&needle.to_lowercase()))
                    != negate
            }
            Op::Has { negate } => self.values.iter().any(|term| has_term(&text, term)) != negate,
            Op::Empty { negate } => {
                let empty = match value {
                    None | Some(Value::Null) => true,
                    Some(Value::String(text)) => text.is_empty(),
                    Some(_) => false,
                };
                empty != negate
            }
        }
    }
}

/// KQL's `has`: `term` occurs in `text` as a whole term, without case. KQL indexes terms as
/// maximal runs of letters and digits (Microsoft Learn, "String operators", "Understanding
/// string terms"), so the characters either side of a match must not be alphanumeric. A term
/// with punctuation inside (`microsoft.keyvault/vaults`) matches where its own ends are term
/// boundaries, as a KQL phrase does.
fn has_term(text: &str, term: &str) -> bool {
    if term.is_empty() {
        return false;
    }
    let haystack: Vec<char> = text.to_lowercase().chars().collect();
    let needle: Vec<char> = term.to_lowercase().chars().collect();
    haystack
        .windows(needle.len())
        .enumerate()
        .any(|(start, window)| {
            let before = start.checked_sub(1).and_then(|at| haystack.get(at));
            let after = haystack.get(start + needle.len());
            window == needle.as_slice()
                && !before.is_some_and(|c| c.is_alphanumeric())
                && !after.is_some_and(|c| c.is_alphanumeric())
        })
}

struct Parser {
    tokens: Vec<Token>,
    position: usize,
}

fn parse_query(query: &str) -> Result<Vec<Stage>, String> {
    let mut parser = Parser {
        tokens: tokenize(query)?,
        position: 0,
    };
    match parser.next() {
        Some(Token::Ident(table)) if table.eq_ignore_ascii_case("resources") => {}
        _ => return Err("the query must start with the 'resources' table".to_owned()),
    }
    let mut stages = Vec::new();
    while parser.peek().is_some() {
        parser.expect_punct("|")?;
        stages.push(parser.stage()?);
    }
    Ok(stages)
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.position)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.position).cloned();
        self.position += 1;
        token
    }

    fn at_punct(&self, punct: &str) -> bool {
        matches!(self.peek(), Some(Token::Punct(p)) if *p == punct)
    }

    fn at_keyword(&self, keyword: &str) -> bool {
        matches!(self.peek(), Some(Token::Ident(word)) if word.eq_ignore_ascii_case(keyword))
    }

    fn at_stage_end(&self) -> bool {
        self.peek().is_none() || self.at_punct("|")
    }

    fn expect_punct(&mut self, punct: &str) -> Result<(), String> {
        match self.next() {
            Some(Token::Punct(p)) if p == punct => Ok(()),
            other => Err(format!(
                "expected '{punct}', found {}",
                describe(other.as_ref())
            )),
        }
    }

    fn ident(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Token::Ident(word)) => Ok(word),
            other => Err(format!(
                "expected a name, found {}",
                describe(other.as_ref())
            )),
        }
    }

    fn string(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Token::Str(text)) => Ok(text),
            other => Err(format!(
                "expected a string literal, found {}",
                describe(other.as_ref())
            )),
        }
    }

    fn stage(&mut self) -> Result<Stage, String> {
        let operator = self.ident()?.to_ascii_lowercase();
        match operator.as_str() {
            "where" => {
                let mut conditions = vec![self.condition()?];
                while !self.at_stage_end() {
                    if self.at_keyword("and") {
                        self.position += 1;
                        conditions.push(self.condition()?);
                    } else {
                        return Err(format!(
                            "only 'and' may join conditions, found {}",
                            describe(self.peek())
                        ));
                    }
                }
                Ok(Stage::Where(conditions))
            }
            "project" => Ok(Stage::Project(self.columns()?)),
            "extend" => Ok(Stage::Extend(self.columns()?)),
            "order" | "sort" => {
                if !self.at_keyword("by") {
                    return Err(format!("expected 'by' after '{operator}'"));
                }
                self.position += 1;
                let mut keys = Vec::new();
                loop {
                    let path = self.path()?;
                    // KQL sorts descending unless told otherwise.
                    let mut descending = true;
                    if self.at_keyword("asc") || self.at_keyword("desc") {
                        descending = self.at_keyword("desc");
                        self.position += 1;
                    }
                    keys.push((path, descending));
                    if !self.at_punct(",") {
                        break;
                    }
                    self.position += 1;
                }
                self.end_of_stage(Stage::Order(keys))
            }
            "count" => self.end_of_stage(Stage::Count),
            "summarize" => self.summarize(),
            "limit" | "take" => match self.next() {
                Some(Token::Number(limit)) => {
                    let limit =
                        usize::try_from(limit).map_err(|_| "limit is too large".to_owned())?;
                    self.end_of_stage(Stage::Limit(limit))
                }
                other => Err(format!(
                    "expected a number after '{operator}', found {}",
                    describe(other.as_ref())
                )),
            },
            other => Err(format!(
                "the operator '{other}' is not supported by the emulator"
            )),
        }
    }

    /// `summarize [name =] count() [by column, …]`, the only aggregation the emulator knows.
    fn summarize(&mut self) -> Result<Stage, String> {
        let mut name = "count_".to_owned();
        let first = self.ident()?;
        let function = if self.at_punct("=") {
            self.position += 1;
            name = first;
            self.ident()?
        } else {
            first
        };
        if !function.eq_ignore_ascii_case("count") {
            return Err(format!(
                "the aggregation '{function}' is not supported by the emulator (only count())"
            ));
        }
        self.expect_punct("(")?;
        self.expect_punct(")")?;
        let by = if self.at_keyword("by") {
            self.position += 1;
            self.columns()?
        } else {
            Vec::new()
        };
        self.end_of_stage(Stage::Summarize { name, by })
    }

    fn end_of_stage(&self, stage: Stage) -> Result<Stage, String> {
        if self.at_stage_end() {
            Ok(stage)
        } else {
            Err(format!("unexpected {}", describe(self.peek())))
        }
    }

    fn columns(&mut self) -> Result<Vec<Column>, String> {
        let mut columns = Vec::new();
        loop {
            let first = self.path()?;
            let column = if self.at_punct("=") && first.keys.is_empty() {
                self.position += 1;
                Column {
                    name: first.column,
                    path: self.path()?,
                }
            } else {
                Column {
                    name: first.default_name(),
                    path: first,
                }
            };
            columns.push(column);
            if self.at_stage_end() {
                return Ok(columns);
            }
            self.expect_punct(",")?;
        }
    }

    fn path(&mut self) -> Result<Path, String> {
        let column = self.ident()?;
        if column.eq_ignore_ascii_case("tostring") && self.at_punct("(") {
            self.position += 1;
            let inner = self.path()?;
            self.expect_punct(")")?;
            return Ok(inner);
        }
        let mut keys = Vec::new();
        loop {
            if self.at_punct(".") {
                self.position += 1;
                keys.push(self.ident()?);
            } else if self.at_punct("[") {
                self.position += 1;
                keys.push(self.string()?);
                self.expect_punct("]")?;
            } else {
                return Ok(Path { column, keys });
            }
        }
    }

    /// One `where` condition: `isempty(path)`-style test, or `path op value(s)`.
    fn condition(&mut self) -> Result<Condition, String> {
        if self.at_keyword("isempty")
            || self.at_keyword("isnotempty")
            || self.at_keyword("isnull")
            || self.at_keyword("isnotnull")
        {
            return self.emptiness_test();
        }
        let path = self.path()?;
        let op = self.comparison_operator()?;
        let values = if matches!(op, Op::In { .. }) {
            self.value_list()?
        } else {
            vec![self.string()?]
        };
        Ok(Condition { path, op, values })
    }

    /// `isempty(path)`, `isnotempty(path)`, `isnull(path)` or `isnotnull(path)`: the emulator
    /// treats null and empty alike (a missing tag is both), so all four map to one operator.
    fn emptiness_test(&mut self) -> Result<Condition, String> {
        let function = self.ident()?.to_ascii_lowercase();
        self.expect_punct("(")?;
        let path = self.path()?;
        self.expect_punct(")")?;
        Ok(Condition {
            path,
            op: Op::Empty {
                negate: function.contains("not"),
            },
            values: Vec::new(),
        })
    }

    /// The operator after a condition's path. Symbolic ones are single tokens; word operators
    /// (`in`, `!in`, `contains`, `!contains`) may be followed by `~` for the case-insensitive form,
    /// which only `in` supports here — anything else is refused rather than guessed.
    fn comparison_operator(&mut self) -> Result<Op, String> {
        match self.next() {
            Some(Token::Punct("==")) => Ok(Op::Equal {
                ignore_case: false,
                negate: false,
            }),
            Some(Token::Punct("=~")) => Ok(Op::Equal {
                ignore_case: true,
                negate: false,
            }),
            Some(Token::Punct("!=")) => Ok(Op::Equal {
                ignore_case: false,
                negate: true,
            }),
            Some(Token::Punct("!~")) => Ok(Op::Equal {
                ignore_case: true,
                negate: true,
            }),
            Some(Token::Ident(word)) => {
                let word = word.to_ascii_lowercase();
                let ignore_case = self.at_punct("~");
                if ignore_case {
                    self.position += 1;
                }
                match (word.as_str(), ignore_case) {
                    ("in", _) => Ok(Op::In {
                        ignore_case,
                        negate: false,
                    }),
                    ("!in", _) => Ok(Op::In {
                        ignore_case,
                        negate: true,
                    }),
                    ("contains", false) => Ok(Op::Contains { negate: false }),
                    ("!contains", false) => Ok(Op::Contains { negate: true }),
                    ("has", false) => Ok(Op::Has { negate: false }),
                    ("!has", false) => Ok(Op::Has { negate: true }),
                    _ => Err(format!(
                        "the operator '{word}' is not supported by the emulator"
                    )),
                }
            }
            other => Err(format!(
                "expected a comparison operator, found {}",
                describe(other.as_ref())
            )),
        }
    }

    /// The parenthesised, comma-separated strings after `in`: `('a', 'b')`.
    fn value_list(&mut self) -> Result<Vec<String>, String> {
        self.expect_punct("(")?;
        let mut values = vec![self.string()?];
        while self.at_punct(",") {
            self.position += 1;
            values.push(self.string()?);
        }
        self.expect_punct(")")?;
        Ok(values)
    }
}

fn describe(token: Option<&Token>) -> String {
    match token {
        None => "the end of the query".to_owned(),
        Some(Token::Ident(word)) => format!("'{word}'"),
        Some(Token::Str(text)) => format!("the string '{text}'"),
        Some(Token::Number(number)) => format!("the number {number}"),
        Some(Token::Punct(punct)) => format!("'{punct}'"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vaults() -> Vec<(ResourcePath, Value)> {
        let vault = |sub: &str, rg: &str, name: &str, tags: Value| {
            let id = format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.KeyVault/vaults/{name}");
            (
                ResourcePath::parse_id(&id).unwrap(),
                json!({"id": id, "name": name, "location": "westeurope", "tags": tags,
                       "properties": {"tenantId": "t", "networkAcls": {"defaultAction": "Deny"}}}),
            )
        };
        vec![
            vault("s1", "RG-A", "kv-b", json!({"tagfence": "On"})),
            vault("s1", "RG-A", "kv-a", json!({"tagfence": "off"})),
            vault(
                "s2",
                "rg-b",
                "kv-c",
                json!({"tagfence": "on", "env": "prod"}),
            ),
        ]
    }

    fn query(body: Value) -> Value {
        let request = parse_request(&body).unwrap();
        let vaults = vaults();
        run(&request, vaults.iter().map(|(path, value)| (path, value)))
    }

    #[test]
    fn the_suggested_discovery_query_works() {
        let result = query(
            json!({"query": "resources\n| where type =~ 'Microsoft.KeyVault/vaults'\n| where tags['tagfence'] =~ 'on'\n| project id, name, resourceGroup, subscriptionId, location, tags, networkAcls = properties.networkAcls"}),
        );
        assert_eq!(result["totalRecords"], 2);
        assert_eq!(result["count"], 2);
        assert_eq!(result["resultTruncated"], "false");
        assert_eq!(result["data"][0]["name"], "kv-b");
        assert_eq!(result["data"][0]["resourceGroup"], "rg-a");
        assert_eq!(
            result["data"][0]["networkAcls"],
            json!({"defaultAction": "Deny"})
        );
        assert_eq!(result["data"][1]["name"], "kv-c");
        assert!(result.get("$skipToken").is_none());
    }

    #[test]
    fn subscriptions_filter_and_paging_work() {
        let first = query(
            json!({"subscriptions": ["S1"], "query": "Resources | project id, name", "options": {"$top": 1}}),
        );
        assert_eq!(first["totalRecords"], 2);
        assert_eq!(
            first["data"],
            json!([{"id": "/subscriptions/s1/resourceGroups/RG-A/providers/Microsoft.KeyVault/vaults/kv-a", "name": "kv-a"}])
        );
        let token = first["$skipToken"].as_str().unwrap().to_owned();
        let second = query(
            json!({"subscriptions": ["s1"], "query": "Resources | project id, name", "options": {"$top": 1, "$skipToken": token}}),
        );
        assert_eq!(second["data"][0]["name"], "kv-b");
        assert!(second.get("$skipToken").is_none());
    }

    #[test]
    fn other_operators_work() {
        let names = |q: &str| -> Vec<String> {
            query(json!({"query": q}))["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|row| row["name"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(
            names("resources | where tags.tagfence == 'on' | project name"),
            ["kv-c"]
        );
        assert_eq!(names("resources | where name in~ ('KV-A', 'kv-c') and isnotempty(tags['env']) | project name"), ["kv-c"]);
        assert_eq!(
            names("resources | where name !in ('kv-a') | order by name asc | project name"),
            ["kv-b", "kv-c"]
        );
        assert_eq!(
            names("resources | where tostring(tags.tagfence) !~ 'on' | project name"),
            ["kv-a"]
        );
        assert_eq!(
            names("resources | where name contains 'B' | extend x = tags.tagfence | project name"),
            ["kv-b"]
        );
        assert_eq!(
            names("resources | sort by name | take 1 | project name"),
            ["kv-c"]
        );
        assert_eq!(
            names("resources | where isempty(tags.env) | limit 5 | project name"),
            ["kv-a", "kv-b"]
        );
    }

    #[test]
    fn has_count_and_summarize_work() {
        let rows = |q: &str| query(json!({"query": q}))["data"].clone();
        assert_eq!(
            rows("resources | where type =~ 'microsoft.keyvault/vaults' | count"),
            json!([{"Count": 3}])
        );
        assert_eq!(
            rows("resources | where name has 'kv' and name !has 'a' | project name"),
            json!([{"name": "kv-b"}, {"name": "kv-c"}])
        );
        assert_eq!(
            rows("resources | where type has 'microsoft.keyvault' | count"),
            json!([{"Count": 3}])
        );
        assert_eq!(
            rows("resources | where name has 'k' | count"),
            json!([{"Count": 0}]),
            "a term matches whole terms only"
        );
        assert_eq!(
            rows("resources | where tags has 'prod' | project name"),
            json!([{"name": "kv-c"}])
        );
        assert_eq!(
            rows("resources | summarize count() by subscriptionId | order by subscriptionId asc"),
            json!([{"subscriptionId": "s1", "count_": 2}, {"subscriptionId": "s2", "count_": 1}])
        );
        assert_eq!(
            rows("resources | where name == 'none' | summarize vaults = count()"),
            json!([{"vaults": 0}])
        );
    }

    #[test]
    fn unsupported_queries_are_refused() {
        for q in [
            "securityresources",
            "resources | summarize dcount(name)",
            "resources | count by name",
            "resources | where a == 'x' or b == 'y'",
            "resources | where a startswith 'x'",
            "resources | where a == 'unterminated",
            "resources | project",
            "resources | limit x",
        ] {
            assert!(parse_request(&json!({"query": q})).is_err(), "{q}");
        }
        assert!(parse_request(&json!({"query": "resources", "options": {"$top": 0}})).is_err());
        assert!(
            parse_request(&json!({"query": "resources", "options": {"$skipToken": "bogus"}}))
                .is_err()
        );
        assert!(parse_request(&json!({})).is_err());
    }
}
