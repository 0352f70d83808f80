//! The one Service Tags model, and its parser for both published formats.
//!
//! Two formats carry the same data (Microsoft's REST reference "Service Tags - List", and the
//! files on the Microsoft Download Center, e.g. id 56519):
//! - the weekly **download file** (`ServiceTags_Public_YYYYMMDD.json`): integer `changeNumber`s,
//!   and per tag the extra `regionId`, `platform` and `networkFeatures`;
//! - the **Discovery API** response (`…/locations/{location}/serviceTags`): `changeNumber`s as
//!   strings, top-level `name`/`id`/`type`, and an optional `nextLink` to a further page.
//!
//! [`ServiceTags::parse`] takes either, plain or gzip-compressed (detected by its magic bytes),
//! and validates it whole: a known `cloud`, a non-empty `values`, every prefix a valid canonical
//! CIDR, no tag listed twice. Unknown keys are skipped (checked as JSON, otherwise ignored), so a
//! new field from Microsoft does not break a run.
//!
//! [`ServiceTags::parse_only`] reads the prefixes of some tags only: the rest of the document is
//! still checked as strict JSON (every byte), but the prefixes of the tags left out are not
//! parsed, and those tags are then absent from the model except by name. That is what lets
//! `tagfence plan` read the 4 MB Public file in about a millisecond (BENCHMARKS.md): it needs a
//! few of ~3,000 tags.
//!
//! Layout: all prefixes live in two flat arrays and all tag strings in one arena; a tag holds
//! ranges into them. Parsing the 4 MB Public file therefore allocates a handful of times instead
//! of ~100,000, which is most of what makes `tagfence plan` fast (BENCHMARKS.md).

use std::collections::HashSet;
use std::fmt;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::io::Read;
use std::ops::Range;

use ipnet::{Ipv4Net, Ipv6Net};

use super::cidr;
use super::json::{self, Reader};

/// Uncompressed documents larger than this are refused. The Public file is about 4 MB (2025);
/// this leaves room for years of growth while bounding what a hostile gzip can expand to.
pub const MAX_DOCUMENT_BYTES: usize = 64 << 20;

/// The Azure cloud a document describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Cloud {
    /// Azure public cloud (`"cloud": "Public"`).
    Public,
    /// Azure US Government (`"cloud": "AzureGovernment"`).
    AzureGovernment,
    /// Azure operated by 21Vianet (China).
    AzureChina,
}

impl Cloud {
    /// Reads the document's `cloud` value. Only `Public` and `AzureGovernment` are confirmed
    /// spellings; the China file's value is unverified (only Public and US Government files
    /// were inspected), so the usual aliases are accepted too.
    pub fn from_document_value(value: &str) -> Option<Cloud> {
        const ALIASES: &[(&str, Cloud)] = &[
            ("public", Cloud::Public),
            ("azurecloud", Cloud::Public),
            ("azurepublic", Cloud::Public),
            ("azurepubliccloud", Cloud::Public),
            ("azuregovernment", Cloud::AzureGovernment),
            ("azureusgovernment", Cloud::AzureGovernment),
            ("usgovernment", Cloud::AzureGovernment),
            ("china", Cloud::AzureChina),
            ("azurechina", Cloud::AzureChina),
            ("azurechinacloud", Cloud::AzureChina),
        ];
        ALIASES
            .iter()
            .find(|(alias, _)| alias.eq_ignore_ascii_case(value))
            .map(|&(_, cloud)| cloud)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Cloud::Public => "Public",
            Cloud::AzureGovernment => "AzureGovernment",
            Cloud::AzureChina => "AzureChina",
        }
    }
}

impl fmt::Display for Cloud {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which published format a document came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// The weekly download file.
    DownloadFile,
    /// A Discovery API response page.
    DiscoveryApi,
}

/// Why a document was refused. Every message names the field, tag or prefix at fault.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("decompressing the gzip service tags document")]
    Gzip(#[source] std::io::Error),
    #[error("the service tags document exceeds {limit} bytes uncompressed")]
    TooLarge { limit: usize },
    #[error(
        "invalid JSON in the service tags document at line {line}, column {column}: {message}"
    )]
    Json {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("the service tags document has no '{0}'")]
    MissingTopLevel(&'static str),
    #[error("tag #{index} in the service tags document has no '{field}'")]
    MissingInTag { index: usize, field: &'static str },
    #[error("tag #{index} in the service tags document has more than one 'name'")]
    NameTwice { index: usize },
    #[error("unknown cloud '{0}' in the service tags document (expected Public, AzureGovernment or AzureChina)")]
    UnknownCloud(String),
    #[error("the service tags document lists no tags ('values' is empty)")]
    NoTags,
    #[error("invalid changeNumber '{value}' {context}")]
    ChangeNumber { value: String, context: String },
    #[error("invalid prefix '{prefix}' in tag '{tag}': {reason}")]
    InvalidPrefix {
        tag: String,
        prefix: String,
        reason: &'static str,
    },
    #[error("tag '{0}' is listed twice in the service tags document")]
    DuplicateTag(String),
    #[error("a further page of the service tags is for {page}, the first was for {first}")]
    PageMismatch { first: String, page: String },
}

#[derive(Debug, Clone, Copy, Default)]
struct Span {
    start: u32,
    len: u32,
}

#[derive(Debug, Clone)]
struct TagRecord {
    name: Span,
    id: Span,
    region: Span,
    system_service: Span,
    change_number: u64,
    v4: Range<u32>,
    v6: Range<u32>,
}

/// A validated Service Tags document.
#[derive(Debug, Clone)]
pub struct ServiceTags {
    /// The cloud the document describes.
    pub cloud: Cloud,
    /// The document's top-level change number; it rises with every weekly publication.
    pub change_number: u64,
    /// The format it was read from.
    pub format: Format,
    /// The Discovery API's link to a further page, if any.
    pub next_link: Option<String>,
    tags: Vec<TagRecord>,
    /// Names of the tags a filtered parse left out.
    skipped: Vec<Span>,
    text: String,
    v4: Vec<Ipv4Net>,
    v6: Vec<Ipv6Net>,
}

/// Which tags' prefixes to read.
#[derive(Debug, Clone, Copy)]
pub enum TagFilter<'f> {
    /// Every tag: the whole document is validated.
    All,
    /// Only the tags with these names (case-insensitive).
    Only(&'f [String]),
}

/// One tag of a [`ServiceTags`] document, borrowed from it.
#[derive(Debug, Clone, Copy)]
pub struct ServiceTag<'d> {
    /// e.g. `AzureCloud.westeurope`, `AzureDevOps`.
    pub name: &'d str,
    pub id: &'d str,
    /// Empty for global tags.
    pub region: &'d str,
    /// e.g. `AzureDevOps`; empty for region-only tags.
    pub system_service: &'d str,
    /// The tag's own change number: it moves whenever the tag's prefixes change.
    pub change_number: u64,
    /// IPv4 prefixes, in document order.
    pub ipv4: &'d [Ipv4Net],
    /// IPv6 prefixes, in document order.
    pub ipv6: &'d [Ipv6Net],
}

impl ServiceTags {
    /// Parses and validates a document, plain JSON or gzip.
    ///
    /// # Errors
    /// Any [`ParseError`]; the document is refused whole.
    pub fn parse(input: &[u8]) -> Result<ServiceTags, ParseError> {
        Self::parse_filtered(input, TagFilter::All)
    }

    /// Parses a document but reads the prefixes of the named tags only (case-insensitive). The
    /// whole document is still checked as JSON, and the named tags as strictly as by
    /// [`ServiceTags::parse`]; the other tags are left out of the result, except that their
    /// names still count for [`ServiceTags::all_names`] and the duplicate check.
    ///
    /// # Errors
    /// Any [`ParseError`]; the document is refused whole.
    pub fn parse_only(input: &[u8], names: &[String]) -> Result<ServiceTags, ParseError> {
        Self::parse_filtered(input, TagFilter::Only(names))
    }

    fn parse_filtered(input: &[u8], filter: TagFilter<'_>) -> Result<ServiceTags, ParseError> {
        if input.starts_with(&[0x1f, 0x8b]) {
            // Decompressed once only: what gzip holds must be JSON. (Unwrapping gzip inside gzip
            // again and again would let a small input hold every layer in memory at once, and
            // a gzip quine recurse forever.)
            let json = gunzip(input)?;
            return Self::parse_json(&json, filter);
        }
        Self::parse_json(input, filter)
    }

    fn parse_json(input: &[u8], filter: TagFilter<'_>) -> Result<ServiceTags, ParseError> {
        if input.len() > MAX_DOCUMENT_BYTES {
            return Err(ParseError::TooLarge {
                limit: MAX_DOCUMENT_BYTES,
            });
        }
        Parser::new(input, filter)?.document()
    }

    /// Adds the tags of a further Discovery API page (read with [`ServiceTags::parse`]) to this
    /// document. The `next_link` becomes the page's own.
    ///
    /// # Errors
    /// [`ParseError::PageMismatch`] when the page is of another cloud or change number (the
    /// data changed between pages: the caller should start over), and
    /// [`ParseError::DuplicateTag`] when a tag appears on two pages.
    pub fn append_page(&mut self, page: ServiceTags) -> Result<(), ParseError> {
        if page.cloud != self.cloud || page.change_number != self.change_number {
            return Err(ParseError::PageMismatch {
                first: format!("{} {}", self.cloud, self.change_number),
                page: format!("{} {}", page.cloud, page.change_number),
            });
        }
        let text_base = self.text.len() as u32;
        let (v4_base, v6_base) = (self.v4.len() as u32, self.v6.len() as u32);
        self.text.push_str(&page.text);
        self.v4.extend_from_slice(&page.v4);
        self.v6.extend_from_slice(&page.v6);
        let shift = |span: Span| Span {
            start: span.start + text_base,
            len: span.len,
        };
        self.tags
            .extend(page.tags.into_iter().map(|record| TagRecord {
                name: shift(record.name),
                id: shift(record.id),
                region: shift(record.region),
                system_service: shift(record.system_service),
                change_number: record.change_number,
                v4: record.v4.start + v4_base..record.v4.end + v4_base,
                v6: record.v6.start + v6_base..record.v6.end + v6_base,
            }));
        self.skipped.extend(page.skipped.into_iter().map(shift));
        self.next_link = page.next_link;
        no_duplicate_tag(self)
    }

    /// Number of tags read (all of them unless the parse was filtered).
    pub fn len(&self) -> usize {
        self.tags.len()
    }

    /// Number of tags in the document, read or not.
    pub fn total_tags(&self) -> usize {
        self.tags.len() + self.skipped.len()
    }

    /// Whether no tag was read.
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty()
    }

    /// The names of every tag in the document, read or not (for "did you mean").
    pub fn all_names(&self) -> impl Iterator<Item = &str> + '_ {
        self.tags
            .iter()
            .map(|r| r.name)
            .chain(self.skipped.iter().copied())
            .map(move |span| self.str(span))
    }

    /// All tags read, in document order.
    pub fn tags(&self) -> impl ExactSizeIterator<Item = ServiceTag<'_>> + '_ {
        self.tags.iter().map(move |record| self.view(record))
    }

    /// The tag with this name: an exact match, else the one case-insensitive match.
    pub fn find(&self, name: &str) -> Option<ServiceTag<'_>> {
        let exact = self.tags.iter().find(|r| self.str(r.name) == name);
        exact
            .or_else(|| {
                self.tags
                    .iter()
                    .find(|r| self.str(r.name).eq_ignore_ascii_case(name))
            })
            .map(|record| self.view(record))
    }

    fn view<'d>(&'d self, record: &TagRecord) -> ServiceTag<'d> {
        ServiceTag {
            name: self.str(record.name),
            id: self.str(record.id),
            region: self.str(record.region),
            system_service: self.str(record.system_service),
            change_number: record.change_number,
            ipv4: &self.v4[record.v4.start as usize..record.v4.end as usize],
            ipv6: &self.v6[record.v6.start as usize..record.v6.end as usize],
        }
    }

    /// The tags read, written in the download file's format (for archiving a document that
    /// came from the Discovery API). Parsing the result gives the same tags.
    pub fn to_download_json(&self) -> Vec<u8> {
        let values: Vec<serde_json::Value> = self
            .tags()
            .map(|tag| {
                let prefixes: Vec<String> = tag
                    .ipv4
                    .iter()
                    .map(ToString::to_string)
                    .chain(tag.ipv6.iter().map(ToString::to_string))
                    .collect();
                serde_json::json!({
                    "name": tag.name,
                    "id": tag.id,
                    "properties": {
                        "changeNumber": tag.change_number,
                        "region": tag.region,
                        "systemService": tag.system_service,
                        "addressPrefixes": prefixes,
                    }
                })
            })
            .collect();
        serde_json::to_vec(&serde_json::json!({
            "changeNumber": self.change_number,
            "cloud": self.cloud.as_str(),
            "values": values,
        }))
        .expect("JSON values serialise")
    }

    fn str(&self, span: Span) -> &str {
        &self.text[span.start as usize..(span.start + span.len) as usize]
    }
}

fn gunzip(input: &[u8]) -> Result<Vec<u8>, ParseError> {
    // The gzip trailer holds the uncompressed size mod 2^32: a good capacity hint.
    let hint = input
        .len()
        .checked_sub(4)
        .map(|at| u32::from_le_bytes(input[at..].try_into().expect("4-byte slice")) as usize)
        .unwrap_or(0)
        .min(MAX_DOCUMENT_BYTES);
    let mut out = Vec::with_capacity(hint);
    let limit = MAX_DOCUMENT_BYTES as u64 + 1;
    flate2::read::MultiGzDecoder::new(input)
        .take(limit)
        .read_to_end(&mut out)
        .map_err(ParseError::Gzip)?;
    if out.len() > MAX_DOCUMENT_BYTES {
        return Err(ParseError::TooLarge {
            limit: MAX_DOCUMENT_BYTES,
        });
    }
    Ok(out)
}

/// Hashes and compares names without regard to ASCII case, without allocating.
struct Caseless<'a>(&'a str);

impl PartialEq for Caseless<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.0.eq_ignore_ascii_case(other.0)
    }
}
impl Eq for Caseless<'_> {}
impl Hash for Caseless<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        for b in self.0.bytes() {
            state.write_u8(b.to_ascii_lowercase());
        }
    }
}

/// FNV-1a: the duplicate check hashes ~3,000 short names, where SipHash's setup dominates.
/// Names come from the document, but a collision only costs a comparison, not correctness.
#[derive(Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u8(b);
        }
    }
    fn write_u8(&mut self, b: u8) {
        let state = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        self.0 = (state ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
}

struct Parser<'a> {
    reader: Reader<'a>,
    filter: TagFilter<'a>,
    skipped: Vec<Span>,
    text: String,
    v4: Vec<Ipv4Net>,
    v6: Vec<Ipv6Net>,
}

/// Refuses a document that names a tag twice, in any case (tags are looked up
/// case-insensitively, so either could answer for the name).
fn no_duplicate_tag(document: &ServiceTags) -> Result<(), ParseError> {
    let mut seen: HashSet<Caseless<'_>, BuildHasherDefault<Fnv>> =
        HashSet::with_capacity_and_hasher(document.total_tags(), Default::default());
    for name in document.all_names() {
        if !seen.insert(Caseless(name)) {
            return Err(ParseError::DuplicateTag(name.to_owned()));
        }
    }
    Ok(())
}

impl<'a> Parser<'a> {
    fn new(input: &'a [u8], filter: TagFilter<'a>) -> Result<Self, ParseError> {
        let reader = Reader::new(input).map_err(|err| json_error(input, err))?;
        Ok(Parser {
            reader,
            filter,
            skipped: Vec::new(),
            text: String::new(),
            // About 3/4 of the prefixes in the Public file are IPv4, ~45 bytes of
            // pretty-printed JSON each: size for that so the arrays rarely grow.
            v4: Vec::with_capacity(input.len() / 60),
            v6: Vec::with_capacity(input.len() / 180),
        })
    }

    fn document(mut self) -> Result<ServiceTags, ParseError> {
        self.document_inner().map_err(|e| match e {
            Failure::Json(err) => json_error(self.reader.input(), err),
            Failure::Parse(err) => err,
        })
    }

    fn document_inner(&mut self) -> Result<ServiceTags, Failure> {
        let mut cloud = None;
        let mut change_number = None;
        let mut tags = None;
        let mut next_link = None;
        let mut api_fields = false;

        self.reader.begin_object()?;
        let mut first = true;
        while let Some(key) = self.reader.next_key(&mut first)? {
            match key.as_ref() {
                "changeNumber" => {
                    let (number, was_string) = self.change_number(None)?;
                    api_fields |= was_string;
                    change_number = Some(number);
                }
                "cloud" => {
                    let value = self.reader.read_str()?;
                    cloud = Some(
                        Cloud::from_document_value(&value)
                            .ok_or_else(|| ParseError::UnknownCloud(value.into_owned()))?,
                    );
                }
                "values" => {
                    // A repeated key counts once, the last (as serde_json reads it): the tags a
                    // filtered parse left out of an earlier "values" are not in the document.
                    self.skipped.clear();
                    tags = Some(self.tags()?);
                }
                "nextLink" => {
                    api_fields = true;
                    if !self.reader.take_null()? {
                        let link = self.reader.read_str()?;
                        next_link = (!link.is_empty()).then(|| link.into_owned());
                    }
                }
                "name" | "id" | "type" => {
                    api_fields = true;
                    self.reader.skip_value()?;
                }
                _ => self.reader.skip_value()?,
            }
        }
        self.reader.finish()?;

        let cloud = cloud.ok_or(ParseError::MissingTopLevel("cloud"))?;
        let change_number = change_number.ok_or(ParseError::MissingTopLevel("changeNumber"))?;
        let tags = tags.ok_or(ParseError::MissingTopLevel("values"))?;
        if tags.is_empty() && self.skipped.is_empty() {
            return Err(ParseError::NoTags.into());
        }
        let document = ServiceTags {
            cloud,
            change_number,
            format: if api_fields {
                Format::DiscoveryApi
            } else {
                Format::DownloadFile
            },
            next_link,
            tags,
            skipped: std::mem::take(&mut self.skipped),
            text: std::mem::take(&mut self.text),
            v4: std::mem::take(&mut self.v4),
            v6: std::mem::take(&mut self.v6),
        };
        no_duplicate_tag(&document)?;
        Ok(document)
    }

    /// Names a tag in an error: by name when it has been read, else by position.
    fn tag_label(&self, index: usize, name: Option<Span>) -> String {
        match name {
            Some(span) => {
                self.text[span.start as usize..(span.start + span.len) as usize].to_owned()
            }
            None => format!("#{index}"),
        }
    }

    /// Reads a change number written as an integer (download file) or a string of digits (API).
    /// Returns it and whether it was a string. `tag` is the tag it belongs to (index and name,
    /// if read), or `None` for the document's own.
    fn change_number(
        &mut self,
        tag: Option<(usize, Option<Span>)>,
    ) -> Result<(u64, bool), Failure> {
        let context = |parser: &Self| match tag {
            None => "in the document".to_owned(),
            Some((index, name)) => format!("in tag '{}'", parser.tag_label(index, name)),
        };
        if self.reader.peek()? == Some(b'"') {
            let text = self.reader.read_str()?;
            let number = text.parse::<u64>().map_err(|_| ParseError::ChangeNumber {
                value: text.to_string(),
                context: context(self),
            })?;
            return Ok((number, true));
        }
        let at = self.reader.offset();
        match self.reader.read_u64() {
            Ok(number) => Ok((number, false)),
            Err(_) => {
                let input = &self.reader.input()[at..];
                let shown = match Reader::new(input)
                    .and_then(|mut probe| probe.skip_value().map(|()| probe.offset()))
                {
                    Ok(end) => String::from_utf8_lossy(&input[..end]).trim().to_owned(),
                    Err(_) => "(not a value)".to_owned(),
                };
                Err(ParseError::ChangeNumber {
                    value: shown,
                    context: context(self),
                }
                .into())
            }
        }
    }

    fn intern(&mut self, text: &str) -> Span {
        let start = self.text.len() as u32;
        self.text.push_str(text);
        Span {
            start,
            len: text.len() as u32,
        }
    }

    fn tags(&mut self) -> Result<Vec<TagRecord>, Failure> {
        let mut tags = Vec::with_capacity(4096);
        self.reader.begin_array()?;
        let mut first = true;
        let mut index = 0;
        while self.reader.next_element(&mut first)? {
            if let Some(record) = self.tag(index)? {
                tags.push(record);
            }
            index += 1;
        }
        Ok(tags)
    }

    /// Whether the filter wants the tag with this name.
    fn wants(&self, name: Span) -> bool {
        match self.filter {
            TagFilter::All => true,
            TagFilter::Only(names) => {
                let name = &self.text[name.start as usize..(name.start + name.len) as usize];
                names.iter().any(|n| n.trim().eq_ignore_ascii_case(name))
            }
        }
    }

    /// Reads one tag; `None` when the filter leaves it out.
    fn tag(&mut self, index: usize) -> Result<Option<TagRecord>, Failure> {
        let mut name: Option<Span> = None;
        let mut id: Option<Span> = None;
        let mut properties: Option<TagRecord> = None;

        self.reader.begin_object()?;
        let mut first = true;
        while let Some(key) = self.reader.next_key(&mut first)? {
            match key.as_ref() {
                "name" => {
                    // Whether the prefixes are read depends on the name: a second name could
                    // make a filtered parse keep a tag whose prefixes it skipped.
                    if name.is_some() {
                        return Err(ParseError::NameTwice { index }.into());
                    }
                    let value = self.reader.read_str()?;
                    name = Some(self.intern(&value));
                }
                "id" => {
                    let value = self.reader.read_str()?;
                    id = Some(self.intern(&value));
                }
                "properties" => {
                    // Published documents name a tag before its properties; if one does not, its
                    // prefixes are read in case the filter wants it.
                    let load = name.is_none_or(|n| self.wants(n));
                    properties = Some(self.properties(index, name, load)?);
                }
                _ => self.reader.skip_value()?,
            }
        }
        let name = name.ok_or(ParseError::MissingInTag {
            index,
            field: "name",
        })?;
        let mut record = properties.ok_or(ParseError::MissingInTag {
            index,
            field: "properties",
        })?;
        if !self.wants(name) {
            self.skipped.push(name);
            return Ok(None);
        }
        record.name = name;
        record.id = id.unwrap_or(name);
        Ok(Some(record))
    }

    /// Reads a tag's `properties`. `name` is the tag's name when it came first (it always does in
    /// published documents), used to name the tag in errors.
    fn properties(
        &mut self,
        index: usize,
        name: Option<Span>,
        load: bool,
    ) -> Result<TagRecord, Failure> {
        let mut record = TagRecord {
            name: Span::default(),
            id: Span::default(),
            region: Span::default(),
            system_service: Span::default(),
            change_number: 0,
            v4: 0..0,
            v6: 0..0,
        };
        let mut change_number = None;
        self.reader.begin_object()?;
        let mut first = true;
        while let Some(key) = self.reader.next_key(&mut first)? {
            match key.as_ref() {
                "changeNumber" => change_number = Some(self.change_number(Some((index, name)))?.0),
                "region" => {
                    let value = self.reader.read_str()?;
                    record.region = self.intern(&value);
                }
                "systemService" => {
                    let value = self.reader.read_str()?;
                    record.system_service = self.intern(&value);
                }
                // The Discovery API can be asked to omit prefixes (`noAddressPrefixes`): a tag
                // without them is simply empty.
                "addressPrefixes" if !load => {
                    if !self.reader.take_null()? {
                        self.reader.skip_string_array()?;
                    }
                }
                "addressPrefixes" => {
                    if !self.reader.take_null()? {
                        let (v4, v6) = self.prefixes(index, name)?;
                        record.v4 = v4;
                        record.v6 = v6;
                    }
                }
                _ => self.reader.skip_value()?,
            }
        }
        record.change_number = change_number.ok_or(ParseError::MissingInTag {
            index,
            field: "properties.changeNumber",
        })?;
        Ok(record)
    }

    fn prefixes(
        &mut self,
        index: usize,
        name: Option<Span>,
    ) -> Result<(Range<u32>, Range<u32>), Failure> {
        let v4_start = self.v4.len() as u32;
        let v6_start = self.v6.len() as u32;
        self.reader.begin_array()?;
        let mut first = true;
        while self.reader.next_element(&mut first)? {
            let (raw, escaped) = self.reader.read_raw_str()?;
            // Fast path, taken by every IPv4 prefix of a published file.
            if !escaped {
                if let Some((addr, len)) = cidr::parse_v4(raw) {
                    let net = cidr::net(addr, len);
                    if u32::from(net.network()) != addr {
                        let shown = String::from_utf8_lossy(raw).into_owned();
                        return Err(self.invalid_prefix(index, name, shown, "host bits set"));
                    }
                    self.v4.push(net);
                    continue;
                }
            }
            self.other_prefix(raw, escaped, index, name)?;
        }
        Ok((
            v4_start..self.v4.len() as u32,
            v6_start..self.v6.len() as u32,
        ))
    }

    /// Reads a prefix the fast path did not take: IPv6, or something invalid.
    fn other_prefix(
        &mut self,
        raw: &[u8],
        escaped: bool,
        index: usize,
        name: Option<Span>,
    ) -> Result<(), Failure> {
        let shown = || String::from_utf8_lossy(raw).into_owned();
        if escaped {
            return Err(self.invalid_prefix(index, name, shown(), "not an IP prefix"));
        }
        match cidr::parse_v6(raw) {
            Some((addr, len)) => {
                let net = Ipv6Net::new(addr.into(), len).expect("parse_v6 checks the length");
                if u128::from(net.network()) != addr {
                    return Err(self.invalid_prefix(index, name, shown(), "host bits set"));
                }
                self.v6.push(net);
                Ok(())
            }
            None => Err(self.invalid_prefix(index, name, shown(), "not an IP prefix")),
        }
    }

    fn invalid_prefix(
        &self,
        index: usize,
        name: Option<Span>,
        prefix: String,
        reason: &'static str,
    ) -> Failure {
        Failure::Parse(ParseError::InvalidPrefix {
            tag: self.tag_label(index, name),
            prefix,
            reason,
        })
    }
}

fn json_error(input: &[u8], err: json::Error) -> ParseError {
    let (line, column) = err.locate(input);
    ParseError::Json {
        line,
        column,
        message: err.message.into_owned(),
    }
}

/// Internal error carrier: JSON errors are located (line, column) only once, at the top.
enum Failure {
    Json(json::Error),
    Parse(ParseError),
}

impl From<json::Error> for Failure {
    fn from(err: json::Error) -> Self {
        Failure::Json(err)
    }
}

impl From<ParseError> for Failure {
    fn from(err: ParseError) -> Self {
        Failure::Parse(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOWNLOAD: &str = r#"{
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
}"#;

    const API: &str = r#"{"name":"public","id":"/subscriptions/s/providers/Microsoft.Network/serviceTags/public",
 "type":"Microsoft.Network/serviceTags","changeNumber":"63","cloud":"Public",
 "values":[{"name":"ApiManagement","id":"ApiManagement",
   "properties":{"changeNumber":"7","region":"","systemService":"AzureApiManagement",
     "addressPrefixes":["13.64.39.16/32","40.74.146.80/31","40.74.147.32/28"],"state":"GA"}}],
 "nextLink":"https://example.test/next?page=2"}"#;

    #[test]
    fn reads_the_download_file_format() {
        let doc = ServiceTags::parse(DOWNLOAD.as_bytes()).unwrap();
        assert_eq!(
            (doc.cloud, doc.change_number, doc.format),
            (Cloud::Public, 365, Format::DownloadFile)
        );
        assert_eq!(doc.next_link, None);
        let devops = doc.find("azuredevops").unwrap();
        assert_eq!(devops.name, "AzureDevOps");
        assert_eq!(devops.system_service, "AzureDevOps");
        assert_eq!(devops.change_number, 7);
        assert_eq!(devops.ipv4, &["20.37.158.0/23".parse::<Ipv4Net>().unwrap()]);
        assert_eq!(devops.ipv6.len(), 1);
        let west = doc.find("AzureCloud.westeurope").unwrap();
        assert_eq!(
            (west.region, west.change_number, west.ipv4.len()),
            ("westeurope", 160, 1)
        );
    }

    #[test]
    fn reads_the_discovery_api_format() {
        let doc = ServiceTags::parse(API.as_bytes()).unwrap();
        assert_eq!(
            (doc.cloud, doc.change_number, doc.format),
            (Cloud::Public, 63, Format::DiscoveryApi)
        );
        assert_eq!(
            doc.next_link.as_deref(),
            Some("https://example.test/next?page=2")
        );
        let tag = doc.find("ApiManagement").unwrap();
        assert_eq!(tag.change_number, 7);
        assert_eq!(tag.ipv4.len(), 3);
    }

    #[test]
    fn reads_gzip_by_its_magic_bytes() {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(DOWNLOAD.as_bytes()).unwrap();
        let gz = encoder.finish().unwrap();
        let doc = ServiceTags::parse(&gz).unwrap();
        assert_eq!(doc.len(), 2);
        let err = ServiceTags::parse(&gz[..gz.len() / 2]).unwrap_err();
        assert!(
            matches!(err, ParseError::Gzip(_) | ParseError::Json { .. }),
            "{err}"
        );
    }

    #[test]
    fn refuses_a_gzip_magic_shorter_than_a_trailer() {
        // Found by fuzzing (fuzz/regressions/service_tags): 2 or 3 bytes starting with the gzip
        // magic panicked reading the size hint of the (missing) 4-byte trailer.
        for input in [&[0x1f, 0x8b][..], &[0x1f, 0x8b, 0x08]] {
            assert!(matches!(
                ServiceTags::parse(input),
                Err(ParseError::Gzip(_))
            ));
        }
    }

    #[test]
    fn decompresses_gzip_once_only() {
        // Found while reviewing the parser for fuzzing: gzip inside gzip was unwrapped
        // recursively, so an input of n nested layers held all n in memory (3,000 layers:
        // 94 KB in, ~700 MB resident).
        use std::io::Write;
        let gzip = |data: &[u8]| {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            encoder.write_all(data).unwrap();
            encoder.finish().unwrap()
        };
        let twice = gzip(&gzip(DOWNLOAD.as_bytes()));
        let err = ServiceTags::parse(&twice).unwrap_err();
        assert!(matches!(err, ParseError::Json { .. }), "{err}");
        assert!(ServiceTags::parse_only(&twice, &[]).is_err());
    }

    #[test]
    fn a_repeated_values_key_counts_once_filtered_or_not() {
        // Found by fuzzing (fuzz/regressions/service_tags): a filtered parse kept the names of
        // the tags it left out of an earlier "values", so it refused a document `parse`
        // accepted (a tag "listed twice"), or accepted one `parse` refused (no tags).
        let tag = |name: &str| {
            format!(
                r#"{{"name":"{name}","properties":{{"changeNumber":1,"addressPrefixes":["1.2.3.0/24"]}}}}"#
            )
        };
        let twice = format!(
            r#"{{"changeNumber":1,"cloud":"Public","values":[{}],"values":[{}]}}"#,
            tag("A"),
            tag("A")
        );
        let full = ServiceTags::parse(twice.as_bytes()).unwrap();
        let only = ServiceTags::parse_only(twice.as_bytes(), &[]).unwrap();
        assert_eq!((full.total_tags(), only.total_tags()), (1, 1));
        let emptied = format!(
            r#"{{"changeNumber":1,"cloud":"Public","values":[{}],"values":[]}}"#,
            tag("A")
        );
        assert!(matches!(
            ServiceTags::parse(emptied.as_bytes()),
            Err(ParseError::NoTags)
        ));
        assert!(matches!(
            ServiceTags::parse_only(emptied.as_bytes(), &[]),
            Err(ParseError::NoTags)
        ));
    }

    #[test]
    fn a_tag_with_two_names_is_refused_filtered_or_not() {
        // Found while writing the fuzz checks: the filter decided on the first name whether to
        // read the prefixes and on the last whether to keep the tag, so a filtered parse could
        // keep a tag without its prefixes.
        let doc = r#"{"changeNumber":1,"cloud":"Public","values":[{"name":"A","properties":{"changeNumber":1,"addressPrefixes":["1.2.3.0/24"]},"name":"B"}]}"#;
        let names = vec!["B".to_owned()];
        for result in [
            ServiceTags::parse(doc.as_bytes()),
            ServiceTags::parse_only(doc.as_bytes(), &names),
        ] {
            assert_eq!(
                result.unwrap_err().to_string(),
                "tag #0 in the service tags document has more than one 'name'"
            );
        }
    }

    #[test]
    fn refuses_bad_documents_with_a_message_naming_the_fault() {
        let cases: &[(String, &str)] = &[
            (DOWNLOAD.replace("\"Public\"", "\"Mars\""), "unknown cloud 'Mars' in the service tags document (expected Public, AzureGovernment or AzureChina)"),
            (r#"{"changeNumber":1,"cloud":"Public","values":[]}"#.into(), "the service tags document lists no tags ('values' is empty)"),
            (r#"{"changeNumber":1,"values":[]}"#.into(), "the service tags document has no 'cloud'"),
            (r#"{"cloud":"Public","values":[]}"#.into(), "the service tags document has no 'changeNumber'"),
            (r#"{"changeNumber":1,"cloud":"Public"}"#.into(), "the service tags document has no 'values'"),
            (DOWNLOAD.replace("20.37.158.0/23", "20.37.158.0/33"), "invalid prefix '20.37.158.0/33' in tag 'AzureDevOps': not an IP prefix"),
            (DOWNLOAD.replace("20.37.158.0/23", "20.37.158.1/23"), "invalid prefix '20.37.158.1/23' in tag 'AzureDevOps': host bits set"),
            (DOWNLOAD.replace("20.37.158.0/23", "banana"), "invalid prefix 'banana' in tag 'AzureDevOps': not an IP prefix"),
            (DOWNLOAD.replace("2603:1030:a07:15::3d2/127", "2603:1030:a07:15::3d3/127"), "invalid prefix '2603:1030:a07:15::3d3/127' in tag 'AzureDevOps': host bits set"),
            (DOWNLOAD.replace("\"changeNumber\": 7,", "\"changeNumber\": \"seven\","), "invalid changeNumber 'seven' in tag 'AzureDevOps'"),
            (DOWNLOAD.replace("\"changeNumber\": 365,", "\"changeNumber\": -1,"), "invalid changeNumber '-1' in the document"),
            (DOWNLOAD.replace("AzureCloud.westeurope\",", "azuredevops\","), "tag 'azuredevops' is listed twice in the service tags document"),
            (DOWNLOAD.replace("\"name\": \"AzureDevOps\",", ""), "tag #0 in the service tags document has no 'name'"),
            (DOWNLOAD[..DOWNLOAD.len() - 2].to_owned(), "invalid JSON in the service tags document at line 31, column 4: unexpected end of input in an object"),
            (DOWNLOAD.replace("\"platform\": \"Azure\",\n        \"systemService\": \"AzureDevOps\"", "\"platform\": \"Azure\"\n        \"systemService\": \"AzureDevOps\""), "invalid JSON in the service tags document at line 13, column 9: expected ',' or '}'"),
        ];
        for (input, expected) in cases {
            let err = ServiceTags::parse(input.as_bytes()).unwrap_err();
            assert_eq!(err.to_string(), *expected);
        }
    }

    #[test]
    fn a_filtered_parse_reads_only_the_named_tags() {
        let names = vec!["azureDEVOPS".to_owned()];
        let doc = ServiceTags::parse_only(DOWNLOAD.as_bytes(), &names).unwrap();
        assert_eq!((doc.len(), doc.total_tags()), (1, 2));
        assert_eq!(doc.find("AzureDevOps").unwrap().ipv4.len(), 1);
        assert!(doc.find("AzureCloud.westeurope").is_none());
        assert_eq!(
            doc.all_names().collect::<Vec<_>>(),
            ["AzureDevOps", "AzureCloud.westeurope"]
        );
        // A bad prefix in a tag left out is not read; bad JSON anywhere still is refused.
        let bad_prefix = DOWNLOAD.replace("4.175.0.0/16", "nonsense");
        assert!(ServiceTags::parse_only(bad_prefix.as_bytes(), &names).is_ok());
        assert!(ServiceTags::parse(bad_prefix.as_bytes()).is_err());
        let bad_json = DOWNLOAD.replace("\"4.175.0.0/16\"", "4.175");
        assert!(ServiceTags::parse_only(bad_json.as_bytes(), &names).is_err());
        let duplicate = DOWNLOAD.replace("AzureCloud.westeurope\",", "azuredevops\",");
        assert!(matches!(
            ServiceTags::parse_only(duplicate.as_bytes(), &names),
            Err(ParseError::DuplicateTag(_))
        ));
    }

    #[test]
    fn an_api_document_rewritten_in_the_download_format_reads_back_the_same() {
        let api = ServiceTags::parse(API.as_bytes()).unwrap();
        let again = ServiceTags::parse(&api.to_download_json()).unwrap();
        assert_eq!(again.format, Format::DownloadFile);
        assert_eq!(
            (again.cloud, again.change_number),
            (api.cloud, api.change_number)
        );
        let view =
            |doc: &ServiceTags| -> Vec<String> { doc.tags().map(|t| format!("{t:?}")).collect() };
        assert_eq!(view(&again), view(&api));
    }

    #[test]
    fn pages_append_into_one_document() {
        let page = |tag: &str, cn: u32| {
            format!(
                r#"{{"name":"public","type":"Microsoft.Network/serviceTags","changeNumber":"{cn}","cloud":"Public","values":[{{"name":"{tag}","id":"{tag}","properties":{{"changeNumber":"1","region":"","systemService":"","addressPrefixes":["20.0.0.0/24"]}}}}],"nextLink":"x"}}"#
            )
        };
        let mut doc = ServiceTags::parse(page("A", 5).as_bytes()).unwrap();
        doc.append_page(ServiceTags::parse(page("B", 5).as_bytes()).unwrap())
            .unwrap();
        assert_eq!(doc.all_names().collect::<Vec<_>>(), ["A", "B"]);
        assert_eq!(doc.find("b").unwrap().ipv4.len(), 1);
        assert!(matches!(
            doc.append_page(ServiceTags::parse(page("C", 6).as_bytes()).unwrap()),
            Err(ParseError::PageMismatch { .. })
        ));
        assert!(matches!(
            doc.append_page(ServiceTags::parse(page("a", 5).as_bytes()).unwrap()),
            Err(ParseError::DuplicateTag(_))
        ));
    }

    #[test]
    fn tolerates_unknown_fields_and_any_key_order() {
        let doc = r#"{"values":[{"properties":{"addressPrefixes":["1.2.3.0/24"],"future":{"x":[1,2]},"changeNumber":2},"name":"T"}],
                      "cloud":"AzureGovernment","extra":null,"changeNumber":"9"}"#;
        let doc = ServiceTags::parse(doc.as_bytes()).unwrap();
        assert_eq!(doc.cloud, Cloud::AzureGovernment);
        let tag = doc.find("T").unwrap();
        assert_eq!((tag.id, tag.change_number, tag.ipv4.len()), ("T", 2, 1));
    }

    #[test]
    fn an_invalid_prefix_before_the_name_is_named_by_position() {
        let doc = r#"{"changeNumber":1,"cloud":"Public","values":[{"properties":{"changeNumber":1,"addressPrefixes":["x"]},"name":"T"}]}"#;
        let err = ServiceTags::parse(doc.as_bytes()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid prefix 'x' in tag '#0': not an IP prefix"
        );
    }

    fn fixture(change_number: u32) -> Vec<u8> {
        let path = format!(
            "{}/tests/fixtures/ServiceTags_Public.changeNumber-{change_number}.json.gz",
            env!("CARGO_MANIFEST_DIR")
        );
        gunzip(&std::fs::read(path).unwrap()).unwrap()
    }

    #[test]
    fn reads_the_real_files() {
        for (cn, westeurope) in [(363, 408), (364, 409), (365, 413)] {
            let json = fixture(cn);
            let doc = ServiceTags::parse(&json).unwrap();
            assert_eq!(
                (doc.cloud, doc.change_number, doc.len(), doc.format),
                (Cloud::Public, cn as u64, 2967, Format::DownloadFile)
            );
            let devops = doc.find("AzureDevOps").unwrap();
            assert_eq!(
                (devops.ipv4.len(), devops.ipv6.len(), devops.change_number),
                (24, 2, 7)
            );
            assert_eq!(
                doc.find("AzureCloud.westeurope").unwrap().ipv4.len(),
                westeurope
            );
            // A filtered read gives the same tags.
            let names = vec!["azuredevops".to_owned(), "AzureCloud.westeurope".to_owned()];
            let only = ServiceTags::parse_only(&json, &names).unwrap();
            assert_eq!((only.len(), only.total_tags()), (2, 2967));
            for name in ["AzureDevOps", "AzureCloud.westeurope"] {
                let (a, b) = (doc.find(name).unwrap(), only.find(name).unwrap());
                assert_eq!(
                    (a.ipv4, a.ipv6, a.change_number, a.region),
                    (b.ipv4, b.ipv6, b.change_number, b.region)
                );
            }
        }
    }

    mod props {
        use super::*;
        use proptest::prelude::*;
        use serde_json::json;

        fn prefix() -> impl Strategy<Value = String> {
            prop_oneof![
                (any::<u32>(), 8u8..=32).prop_map(|(a, l)| cidr::net(a, l).to_string()),
                (any::<u128>(), 16u8..=128)
                    .prop_map(|(a, l)| Ipv6Net::new(a.into(), l).unwrap().trunc().to_string()),
            ]
        }

        fn tag() -> impl Strategy<Value = serde_json::Value> {
            ("[A-Za-z]{1,8}(\\.[a-z]{1,6})?", "[a-z]{0,6}", any::<u32>(), prop::collection::vec(prefix(), 0..6), any::<bool>())
                .prop_map(|(name, region, cn, prefixes, as_string)| {
                    let cn = if as_string { json!(cn.to_string()) } else { json!(cn) };
                    json!({"name": name, "id": name, "properties": {"changeNumber": cn, "region": region,
                        "regionId": 3, "platform": "Azure", "systemService": "", "addressPrefixes": prefixes,
                        "networkFeatures": null}})
                })
        }

        proptest! {
            /// Any document serde_json writes (compact or pretty) reads back to the same tags.
            #[test]
            fn reads_back_what_serde_json_writes(tags in prop::collection::vec(tag(), 1..8), pretty in any::<bool>(), cn in any::<u32>()) {
                let mut seen = HashSet::new();
                let tags: Vec<_> = tags.into_iter().filter(|t| seen.insert(t["name"].as_str().unwrap().to_ascii_lowercase())).collect();
                let doc = json!({"changeNumber": cn, "cloud": "Public", "values": tags});
                let text = if pretty { serde_json::to_string_pretty(&doc).unwrap() } else { doc.to_string() };
                let parsed = ServiceTags::parse(text.as_bytes()).unwrap();
                prop_assert_eq!(parsed.change_number, u64::from(cn));
                prop_assert_eq!(parsed.len(), tags.len());
                for (ours, theirs) in parsed.tags().zip(&tags) {
                    prop_assert_eq!(ours.name, theirs["name"].as_str().unwrap());
                    prop_assert_eq!(ours.region, theirs["properties"]["region"].as_str().unwrap());
                    let mut all: Vec<String> = ours.ipv4.iter().map(ToString::to_string).collect();
                    all.extend(ours.ipv6.iter().map(ToString::to_string));
                    let mut expected: Vec<String> = theirs["properties"]["addressPrefixes"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_owned()).collect();
                    all.sort(); expected.sort();
                    prop_assert_eq!(all, expected);
                }
            }

            /// Every strict prefix of a valid document is refused (a truncated download never
            /// passes), filtered or not.
            #[test]
            fn refuses_every_truncation(cut in 0usize..1000) {
                let cut = cut % DOWNLOAD.len();
                prop_assert!(ServiceTags::parse(&DOWNLOAD.as_bytes()[..cut]).is_err());
                prop_assert!(ServiceTags::parse_only(&DOWNLOAD.as_bytes()[..cut], &["AzureDevOps".to_owned()]).is_err());
            }
        }
    }
}
