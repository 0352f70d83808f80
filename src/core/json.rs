//! A strict JSON pull reader over a byte slice, built for one large document read once.
//!
//! Why not serde_json: the Service Tags file is about 4 MB of pretty-printed JSON holding ~90,000
//! prefix strings, and `tagfence plan` must read it whole in a few milliseconds (BENCHMARKS.md).
//! Deserialising it with serde_json alone costs ~6 ms, and a byte-at-a-time reader is no
//! better: the cost is per token (~300,000 of them), in loops whose length varies with the data
//! and so defeats branch prediction.
//!
//! So the reader works in two stages, after simdjson (Langdale & Lemire, "Parsing Gigabytes of
//! JSON per Second", 2019):
//! 1. **Index.** One pass over the input, 64 bytes at a time, computes bit masks of quotes,
//!    backslashes, whitespace, structural characters and control bytes (with AVX-512, AVX2 or
//!    SSE2; a portable loop elsewhere). Escaped quotes are removed by the odd-backslash-run rule,
//!    the inside of strings is the prefix-XOR of the quotes, and what remains is a *tape*: the
//!    position of every token (each structural character, both quotes of every string, the first
//!    byte of every number or literal). Raw control characters inside strings, unterminated
//!    strings and invalid UTF-8 are refused here.
//! 2. **Walk.** The methods below move along the tape: skipping whitespace and finding the end
//!    of a string are an index increment, whatever the indentation or the string's length.
//!
//! It is strict RFC 8259: every value is checked (including the ones the caller skips), numbers
//! and literals follow the grammar, escapes are valid, nesting is bounded, and nothing but
//! whitespace may follow the top-level value. The tests compare it with serde_json.

use std::borrow::Cow;
use std::fmt;

/// Nesting deeper than this is refused rather than walked (no recursion is involved, but a
/// Service Tags document never nests deeper than 5, so anything deeper is not one).
const MAX_DEPTH: usize = 128;

/// Inputs are indexed with `u32` positions.
pub const MAX_INPUT: usize = u32::MAX as usize - 64;

/// A JSON syntax error, located by byte offset; [`Error::locate`] turns it into line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// Byte offset of the offending input.
    pub offset: usize,
    /// What was expected or found, e.g. "expected ',' or '}'".
    pub message: Cow<'static, str>,
}

impl Error {
    fn new(offset: usize, message: impl Into<Cow<'static, str>>) -> Self {
        Error {
            offset,
            message: message.into(),
        }
    }

    /// Line and column (both 1-based, column counted in bytes) of the error within `input`.
    pub fn locate(&self, input: &[u8]) -> (usize, usize) {
        let upto = &input[..self.offset.min(input.len())];
        let line = upto.iter().filter(|&&b| b == b'\n').count() + 1;
        let column = upto.len() - upto.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1) + 1;
        (line, column)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.message, self.offset)
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// Byte-class masks of one 64-byte chunk: bit i describes byte i.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Masks {
    quote: u64,
    backslash: u64,
    /// Space, tab, newline, carriage return.
    ws: u64,
    /// `{ } [ ] , :`
    structural: u64,
    /// Bytes below 0x20.
    control: u64,
    /// Bytes of 0x80 and above (only UTF-8 sequences inside strings may have them).
    high: u64,
}

/// The instruction sets stage 1 can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Isa {
    /// Other architectures: a byte at a time.
    #[cfg_attr(target_arch = "x86_64", allow(dead_code))]
    Portable,
    /// The x86_64 baseline.
    #[cfg(target_arch = "x86_64")]
    Sse2,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// One instruction per 64 bytes and byte class.
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Isa {
    /// The best this CPU runs. `std` caches the CPU feature check after the first call.
    fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512bw")
                && std::is_x86_feature_detected!("popcnt")
                && std::is_x86_feature_detected!("bmi1")
            {
                return Isa::Avx512;
            }
            if std::is_x86_feature_detected!("avx2")
                && std::is_x86_feature_detected!("popcnt")
                && std::is_x86_feature_detected!("bmi1")
            {
                return Isa::Avx2;
            }
            Isa::Sse2
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            Isa::Portable
        }
    }
}

/// The definition the SIMD routines must match, a byte at a time.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn masks_portable(chunk: &[u8; 64]) -> Masks {
    let mut m = Masks::default();
    for (i, &b) in chunk.iter().enumerate() {
        let bit = 1u64 << i;
        let set = |flag: bool| if flag { bit } else { 0 };
        m.quote |= set(b == b'"');
        m.backslash |= set(b == b'\\');
        m.ws |= set(matches!(b, b' ' | b'\n' | b'\r' | b'\t'));
        m.structural |= set(matches!(b, b'{' | b'}' | b'[' | b']' | b',' | b':'));
        m.control |= set(b < 0x20);
        m.high |= set(b >= 0x80);
    }
    m
}

#[cfg(target_arch = "x86_64")]
mod simd {
    //! The same masks as `masks_portable`, 16, 32 or 64 bytes per instruction. Each routine is
    //! only ever reached after `Isa::detect` has checked that the CPU has its features.
    use super::Masks;
    use std::arch::x86_64::*;

    #[target_feature(enable = "sse2")]
    pub(super) fn sse2(chunk: &[u8; 64]) -> Masks {
        let mut m = Masks::default();
        for lane in 0..4 {
            // SAFETY: 16 bytes at lane * 16 lie inside the 64-byte chunk; the load is unaligned.
            let v = unsafe { _mm_loadu_si128(chunk.as_ptr().add(lane * 16).cast::<__m128i>()) };
            let eq = |b: u8| _mm_cmpeq_epi8(v, _mm_set1_epi8(b as i8));
            let bits = |x: __m128i| u64::from(_mm_movemask_epi8(x) as u16) << (lane * 16);
            let or = _mm_or_si128;
            m.quote |= bits(eq(b'"'));
            m.backslash |= bits(eq(b'\\'));
            m.ws |= bits(or(or(eq(b' '), eq(b'\n')), or(eq(b'\r'), eq(b'\t'))));
            m.structural |= bits(or(
                or(or(eq(b'{'), eq(b'}')), or(eq(b'['), eq(b']'))),
                or(eq(b','), eq(b':')),
            ));
            // Signed compare: 0x00..=0x1F are the bytes > -1 and < 0x20; 0x80.. are negative.
            m.control |= bits(_mm_and_si128(
                _mm_cmpgt_epi8(v, _mm_set1_epi8(-1)),
                _mm_cmplt_epi8(v, _mm_set1_epi8(0x20)),
            ));
            m.high |= bits(v);
        }
        m
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn avx2(chunk: &[u8; 64]) -> Masks {
        let mut m = Masks::default();
        for lane in 0..2 {
            // SAFETY: 32 bytes at lane * 32 lie inside the 64-byte chunk; the load is unaligned.
            let v = unsafe { _mm256_loadu_si256(chunk.as_ptr().add(lane * 32).cast::<__m256i>()) };
            let eq = |b: u8| _mm256_cmpeq_epi8(v, _mm256_set1_epi8(b as i8));
            let bits = |x: __m256i| u64::from(_mm256_movemask_epi8(x) as u32) << (lane * 32);
            let or = _mm256_or_si256;
            m.quote |= bits(eq(b'"'));
            m.backslash |= bits(eq(b'\\'));
            m.ws |= bits(or(or(eq(b' '), eq(b'\n')), or(eq(b'\r'), eq(b'\t'))));
            m.structural |= bits(or(
                or(or(eq(b'{'), eq(b'}')), or(eq(b'['), eq(b']'))),
                or(eq(b','), eq(b':')),
            ));
            // Unsigned "below 0x20": min(v, 0x1F) == v.
            m.control |= bits(_mm256_cmpeq_epi8(
                _mm256_min_epu8(v, _mm256_set1_epi8(0x1F)),
                v,
            ));
            m.high |= bits(v);
        }
        m
    }

    #[target_feature(enable = "avx512bw")]
    pub(super) fn avx512(chunk: &[u8; 64]) -> Masks {
        // SAFETY: the chunk is 64 bytes; the load is unaligned.
        let v = unsafe { _mm512_loadu_si512(chunk.as_ptr().cast::<__m512i>()) };
        let eq = |b: u8| _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8(b as i8));
        Masks {
            quote: eq(b'"'),
            backslash: eq(b'\\'),
            ws: eq(b' ') | eq(b'\n') | eq(b'\r') | eq(b'\t'),
            structural: eq(b'{') | eq(b'}') | eq(b'[') | eq(b']') | eq(b',') | eq(b':'),
            control: _mm512_cmplt_epu8_mask(v, _mm512_set1_epi8(0x20)),
            high: _mm512_movepi8_mask(v),
        }
    }

    #[cfg(test)]
    type MaskFn = fn(&[u8; 64]) -> Masks;

    /// Every routine this CPU can run, for tests.
    #[cfg(test)]
    pub fn all() -> Vec<(&'static str, MaskFn)> {
        // SAFETY (all three): each is only returned when the CPU reports its features.
        let mut fns: Vec<(&'static str, MaskFn)> = vec![("sse2", |c| unsafe { sse2(c) })];
        if std::is_x86_feature_detected!("avx2") {
            fns.push(("avx2", |c| unsafe { avx2(c) }));
        }
        if std::is_x86_feature_detected!("avx512bw") {
            fns.push(("avx512bw", |c| unsafe { avx512(c) }));
        }
        fns
    }
}

/// Each bit i of the result is the XOR of bits 0..=i of `x`: with `x` the quotes, the bytes
/// from an opening quote up to (not including) its closing quote.
#[inline(always)]
fn prefix_xor(mut x: u64) -> u64 {
    x ^= x << 1;
    x ^= x << 2;
    x ^= x << 4;
    x ^= x << 8;
    x ^= x << 16;
    x ^= x << 32;
    x
}

/// The bytes escaped by a backslash (simdjson's `find_escaped`): a byte is escaped when it
/// follows an odd-length run of backslashes. `carry` is 1 when the previous chunk ended in an
/// unfinished escape.
#[inline]
fn escaped(backslash: u64, carry: &mut u64) -> u64 {
    const EVEN: u64 = 0x5555_5555_5555_5555;
    if backslash == 0 {
        let result = *carry;
        *carry = 0;
        return result;
    }
    let backslash = backslash & !*carry;
    let follows_escape = (backslash << 1) | *carry;
    let odd_starts = backslash & !EVEN & !follows_escape;
    let (sequences_on_even, overflow) = odd_starts.overflowing_add(backslash);
    *carry = u64::from(overflow);
    let invert = sequences_on_even << 1;
    (EVEN ^ invert) & follows_escape
}

/// How many 64-byte chunks stage 1 indexes per refill of the tape window: 16 KiB of input, a
/// few hundred tokens. The window is reused, so it stays in cache and costs no page faults
/// (a whole-document tape of ~1.5 MB did: ~1 ms of a cold run).
const CHUNKS_PER_REFILL: usize = 256;

/// Stage 1, run a window at a time: appends the positions of the tokens of the next chunks to
/// the tape, carrying string, escape and number state from chunk to chunk.
struct Indexer {
    isa: Isa,
    /// Where the next chunk starts.
    pos: usize,
    escape_carry: u64,
    string_carry: u64,
    atom_carry: u64,
    last_quote: usize,
    /// Whether any backslash has been indexed yet (no string before it can hold escapes).
    any_backslash: bool,
    /// Whether any byte of 0x80 or more has been indexed yet (strings before it are ASCII).
    any_high: bool,
    done: bool,
}

impl Indexer {
    fn new(start: usize) -> Self {
        Indexer {
            isa: Isa::detect(),
            pos: start,
            escape_carry: 0,
            string_carry: 0,
            atom_carry: 0,
            last_quote: 0,
            any_backslash: false,
            any_high: false,
            done: false,
        }
    }

    /// Indexes up to `chunks` more chunks of `input` into `tape`; at the end of the input,
    /// appends `input.len()` as the end marker.
    fn fill(&mut self, input: &[u8], tape: &mut Vec<u32>, chunks: usize) -> Result<()> {
        match self.isa {
            Isa::Portable => self.fill_with(input, tape, chunks, masks_portable),
            // SAFETY (all three): `Isa::detect` chose the variant only if the CPU has its
            // features.
            #[cfg(target_arch = "x86_64")]
            Isa::Sse2 => unsafe { self.fill_sse2(input, tape, chunks) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { self.fill_avx2(input, tape, chunks) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { self.fill_avx512(input, tape, chunks) },
        }
    }

    // One copy of the chunk loop per instruction set, so that the mask routine is inlined into
    // it and the loop itself can use popcnt and tzcnt.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "sse2")]
    fn fill_sse2(&mut self, input: &[u8], tape: &mut Vec<u32>, chunks: usize) -> Result<()> {
        // The closure inherits this function's target features, so the call is safe.
        self.fill_with(input, tape, chunks, |c| simd::sse2(c))
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,popcnt,bmi1")]
    fn fill_avx2(&mut self, input: &[u8], tape: &mut Vec<u32>, chunks: usize) -> Result<()> {
        // The closure inherits this function's target features, so the call is safe.
        self.fill_with(input, tape, chunks, |c| simd::avx2(c))
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512bw,popcnt,bmi1")]
    fn fill_avx512(&mut self, input: &[u8], tape: &mut Vec<u32>, chunks: usize) -> Result<()> {
        // The closure inherits this function's target features, so the call is safe.
        self.fill_with(input, tape, chunks, |c| simd::avx512(c))
    }

    #[inline(always)]
    fn fill_with(
        &mut self,
        input: &[u8],
        tape: &mut Vec<u32>,
        chunks: usize,
        masks: impl Fn(&[u8; 64]) -> Masks,
    ) -> Result<()> {
        for _ in 0..chunks {
            let start = self.pos;
            if start >= input.len() {
                if self.string_carry != 0 {
                    return Err(Error::new(self.last_quote, "unterminated string"));
                }
                tape.push(input.len() as u32);
                self.done = true;
                return Ok(());
            }
            let m = match input.get(start..start + 64) {
                Some(chunk) => masks(chunk.try_into().expect("64-byte slice")),
                None => {
                    // The last, partial chunk: pad with spaces.
                    let mut chunk = [b' '; 64];
                    chunk[..input.len() - start].copy_from_slice(&input[start..]);
                    masks(&chunk)
                }
            };
            self.any_backslash |= m.backslash != 0;
            self.any_high |= m.high != 0;
            let quote = m.quote & !escaped(m.backslash, &mut self.escape_carry);
            let in_string = prefix_xor(quote) ^ self.string_carry;
            self.string_carry = ((in_string as i64) >> 63) as u64;
            if quote != 0 {
                self.last_quote = start + 63 - quote.leading_zeros() as usize;
            }
            let raw_control = m.control & in_string;
            if raw_control != 0 {
                return Err(Error::new(
                    start + raw_control.trailing_zeros() as usize,
                    "control character in a string",
                ));
            }
            let outside = !in_string;
            let atoms = !m.ws & outside & !m.structural & !quote;
            let atom_starts = atoms & !((atoms << 1) | self.atom_carry);
            self.atom_carry = atoms >> 63;
            let tokens = (m.structural & outside) | quote | atom_starts;
            flatten(tokens, start as u32, tape);
            self.pos = start + 64;
        }
        Ok(())
    }
}

/// Appends the positions of the set bits of `tokens` (offsets from `base`) to `tape`.
///
/// After simdjson: the first eight are written unconditionally, so that the common chunk (about
/// five tokens) takes no data-dependent branch; only chunks with more pay for a loop.
#[inline(always)]
fn flatten(mut tokens: u64, base: u32, tape: &mut Vec<u32>) {
    let count = tokens.count_ones() as usize;
    tape.reserve(64);
    let spare = &mut tape.spare_capacity_mut()[..64];
    for slot in &mut spare[..8] {
        slot.write(base.wrapping_add(tokens.trailing_zeros()));
        tokens &= tokens.wrapping_sub(1);
    }
    if count > 8 {
        for slot in &mut spare[8..count] {
            slot.write(base + tokens.trailing_zeros());
            tokens &= tokens - 1;
        }
    }
    // SAFETY: the first `count` (<= 64) spare elements were initialised above: the first
    // eight unconditionally, the rest in the loop.
    unsafe { tape.set_len(tape.len() + count) };
}

fn is_ws(b: &u8) -> bool {
    matches!(b, b' ' | b'\n' | b'\r' | b'\t')
}

/// A JSON string as read: borrowed when it holds no escapes (the common case), owned otherwise.
pub type Str<'a> = Cow<'a, str>;

/// The reader. It only ever moves forward; each method consumes one syntactic element.
pub struct Reader<'a> {
    buf: &'a [u8],
    /// A window of token positions; after the last token, `buf.len()` as the end marker.
    tape: Vec<u32>,
    /// Index of the next token in `tape`.
    next: usize,
    indexer: Indexer,
    depth: usize,
}

impl<'a> Reader<'a> {
    /// Starts reading `buf`.
    ///
    /// # Errors
    /// Stage 1 errors in the first window: a raw control character in a string, an
    /// unterminated string.
    pub fn new(buf: &'a [u8]) -> Result<Self> {
        if buf.len() > MAX_INPUT {
            return Err(Error::new(0, "document too large to index"));
        }
        // A UTF-8 byte order mark is not JSON, but some Windows tools write one; accept and drop it.
        let skip = if buf.starts_with(&[0xEF, 0xBB, 0xBF]) {
            3
        } else {
            0
        };
        let mut reader = Reader {
            buf,
            tape: Vec::with_capacity(CHUNKS_PER_REFILL * 16),
            next: 0,
            indexer: Indexer::new(skip),
            depth: 0,
        };
        reader.ensure(0)?;
        Ok(reader)
    }

    /// Makes sure the tape holds the token `ahead` places after the next one (or the end).
    #[inline(always)]
    fn ensure(&mut self, ahead: usize) -> Result<()> {
        if self.next + ahead < self.tape.len() {
            return Ok(());
        }
        self.refill(ahead)
    }

    #[inline(never)]
    fn refill(&mut self, ahead: usize) -> Result<()> {
        self.tape.drain(..self.next);
        self.next = 0;
        while ahead >= self.tape.len() && !self.indexer.done {
            self.indexer
                .fill(self.buf, &mut self.tape, CHUNKS_PER_REFILL)?;
        }
        Ok(())
    }

    /// The position of the token `ahead` places after the next one (the input length past the
    /// end). The caller has called [`Reader::ensure`] for it.
    #[inline(always)]
    fn token(&self, ahead: usize) -> usize {
        self.tape
            .get(self.next + ahead)
            .map_or(self.buf.len(), |&p| p as usize)
    }

    /// Byte offset of the next token (the input length at the end).
    #[inline]
    pub fn offset(&mut self) -> usize {
        // A stage 1 error further on is reported when the walk gets there; here it only
        // means there is no next token to point at.
        if self.ensure(0).is_err() {
            return self.indexer.pos.min(self.buf.len());
        }
        self.token(0)
    }

    /// The input this reader walks.
    pub fn input(&self) -> &'a [u8] {
        self.buf
    }

    /// An error at the next token.
    pub fn error(&mut self, message: impl Into<Cow<'static, str>>) -> Error {
        Error::new(self.offset(), message)
    }

    /// The next token's first byte, without consuming it; `None` at the end.
    ///
    /// # Errors
    /// A stage 1 error in the input ahead.
    #[inline]
    pub fn peek(&mut self) -> Result<Option<u8>> {
        self.ensure(0)?;
        Ok(self.buf.get(self.token(0)).copied())
    }

    #[inline]
    fn expect_byte(&mut self, byte: u8, what: &'static str) -> Result<()> {
        match self.peek()? {
            Some(b) if b == byte => {
                self.next += 1;
                Ok(())
            }
            Some(_) => Err(self.error(what)),
            None => Err(self.error("unexpected end of input")),
        }
    }

    fn enter(&mut self) -> Result<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error("nesting too deep"));
        }
        Ok(())
    }

    /// Consumes `{`.
    pub fn begin_object(&mut self) -> Result<()> {
        self.expect_byte(b'{', "expected an object")?;
        self.enter()
    }

    /// Consumes `[`.
    pub fn begin_array(&mut self) -> Result<()> {
        self.expect_byte(b'[', "expected an array")?;
        self.enter()
    }

    /// Reads the next member key of an object begun with [`Reader::begin_object`] and the `:`
    /// after it, or consumes the closing `}` and returns `None`. `first` tracks whether a comma
    /// is due; start it at `true`.
    #[inline]
    pub fn next_key(&mut self, first: &mut bool) -> Result<Option<Str<'a>>> {
        match self.peek()? {
            Some(b'}') => {
                self.next += 1;
                self.depth -= 1;
                return Ok(None);
            }
            Some(b',') if !*first => self.next += 1,
            Some(_) if !*first => return Err(self.error("expected ',' or '}'")),
            Some(_) => {}
            None => return Err(self.error("unexpected end of input in an object")),
        }
        *first = false;
        if self.peek()? != Some(b'"') {
            return Err(self.error("expected a string key"));
        }
        let key = self.read_str()?;
        self.expect_byte(b':', "expected ':' after an object key")?;
        Ok(Some(key))
    }

    /// Positions the reader at the next element of an array begun with
    /// [`Reader::begin_array`] and returns `true`, or consumes the closing `]` and returns
    /// `false`. `first` tracks whether a comma is due; start it at `true`.
    #[inline]
    pub fn next_element(&mut self, first: &mut bool) -> Result<bool> {
        match self.peek()? {
            Some(b']') => {
                self.next += 1;
                self.depth -= 1;
                return Ok(false);
            }
            Some(b',') if !*first => self.next += 1,
            Some(_) if !*first => return Err(self.error("expected ',' or ']'")),
            Some(_) => {}
            None => return Err(self.error("unexpected end of input in an array")),
        }
        *first = false;
        Ok(true)
    }

    /// Returns the raw bytes between the quotes of the next string, and whether it holds
    /// escapes (whose syntax is then not yet checked). The bytes are valid UTF-8.
    #[inline]
    pub fn read_raw_str(&mut self) -> Result<(&'a [u8], bool)> {
        self.ensure(1)?;
        let open = self.token(0);
        if self.buf.get(open) != Some(&b'"') {
            return Err(self.error(if open >= self.buf.len() {
                "unexpected end of input"
            } else {
                "expected a string"
            }));
        }
        // Stage 1 paired every opening quote with its closing quote as the next token.
        let close = self.token(1);
        self.next += 2;
        let raw = &self.buf[open + 1..close];
        // Everything up to the closing quote has been indexed, so if no backslash or high byte
        // has been seen yet, this string has none.
        if self.indexer.any_high && !raw.is_ascii() && std::str::from_utf8(raw).is_err() {
            return Err(Error::new(open, "invalid UTF-8 in a string"));
        }
        Ok((raw, self.indexer.any_backslash && raw.contains(&b'\\')))
    }

    /// Reads a string. Borrowed unless it holds escapes.
    pub fn read_str(&mut self) -> Result<Str<'a>> {
        let at = self.offset();
        let (raw, escaped) = self.read_raw_str()?;
        // SAFETY: `read_raw_str` returns only bytes that are ASCII or checked to be UTF-8.
        let text = unsafe { std::str::from_utf8_unchecked(raw) };
        if !escaped {
            return Ok(Cow::Borrowed(text));
        }
        unescape(text)
            .map(Cow::Owned)
            .map_err(|m| Error::new(at, m))
    }

    /// Checks the next string's escapes without decoding it into the caller's hands.
    fn skip_str(&mut self) -> Result<()> {
        let at = self.offset();
        let (raw, escaped) = self.read_raw_str()?;
        if escaped {
            // SAFETY: as in `read_str`.
            let text = unsafe { std::str::from_utf8_unchecked(raw) };
            unescape(text).map_err(|m| Error::new(at, m))?;
        }
        Ok(())
    }

    /// Skips an array whose elements are all strings (an `addressPrefixes` array of a tag the
    /// caller does not need), checking it as strictly as [`Reader::skip_value`] would, and
    /// returns the number of elements. Any other element is an error.
    pub fn skip_string_array(&mut self) -> Result<usize> {
        self.begin_array()?;
        let mut count = 0;
        if self.peek()? == Some(b']') {
            self.next += 1;
            self.depth -= 1;
            return Ok(0);
        }
        // The tokens of a well-formed array of plain strings come in threes: open quote, close
        // quote, then ',' or ']'. Anything else goes to the general path, which reports it.
        loop {
            self.ensure(2)?;
            let buf = self.buf;
            let open = self.token(0);
            let close = self.token(1);
            // Not plain: not a string (e.g. the end of the input), an escape (syntax to check)
            // or non-ASCII (UTF-8 to check). Only a string's body may be sliced: at the end,
            // `open` is the input's length.
            let plain = buf.get(open) == Some(&b'"') && {
                let body = &buf[open + 1..close];
                let escapes = self.indexer.any_backslash && body.contains(&b'\\');
                let non_ascii = self.indexer.any_high && !body.is_ascii();
                !escapes && !non_ascii
            };
            if !plain {
                break;
            }
            match buf.get(self.token(2)) {
                Some(b',') => {
                    self.next += 3;
                    count += 1;
                }
                Some(b']') => {
                    self.next += 3;
                    self.depth -= 1;
                    return Ok(count + 1);
                }
                _ => {
                    self.next += 2;
                    count += 1;
                    let mut first = false;
                    while self.next_element(&mut first)? {
                        self.skip_str()?;
                        count += 1;
                    }
                    return Ok(count);
                }
            }
        }
        // At an element that is not a plain string.
        self.skip_str()?;
        count += 1;
        let mut first = false;
        while self.next_element(&mut first)? {
            self.skip_str()?;
            count += 1;
        }
        Ok(count)
    }

    /// Checks that only whitespace lies between `end` and the next token, i.e. that a number or
    /// literal ending at `end` is the whole token.
    fn end_atom(&mut self, end: usize, what: &'static str) -> Result<()> {
        self.next += 1;
        self.ensure(0)?;
        let following = self.token(0);
        if self.buf[end..following].iter().all(is_ws) {
            Ok(())
        } else {
            Err(Error::new(end, what))
        }
    }

    /// Reads an unsigned integer written as a JSON number. Fractions, exponents and negative
    /// numbers are refused.
    pub fn read_u64(&mut self) -> Result<u64> {
        self.ensure(0)?;
        let start = self.token(0);
        let text = self.scan_number()?;
        let is_plain = !text.is_empty() && text.iter().all(u8::is_ascii_digit);
        let parsed = if is_plain {
            std::str::from_utf8(text)
                .ok()
                .and_then(|t| t.parse::<u64>().ok())
        } else {
            None
        };
        parsed.ok_or_else(|| Error::new(start, "expected an unsigned integer"))
    }

    /// Consumes a number per the JSON grammar and returns its text.
    fn scan_number(&mut self) -> Result<&'a [u8]> {
        let buf = self.buf;
        self.ensure(0)?;
        let start = self.token(0);
        let mut pos = start;
        let digits = |pos: &mut usize| {
            let from = *pos;
            while buf.get(*pos).is_some_and(u8::is_ascii_digit) {
                *pos += 1;
            }
            *pos - from
        };
        if buf.get(pos) == Some(&b'-') {
            pos += 1;
        }
        match buf.get(pos) {
            Some(b'0') => pos += 1,
            Some(b'1'..=b'9') => {
                digits(&mut pos);
            }
            _ => return Err(Error::new(pos, "invalid number")),
        }
        if buf.get(pos) == Some(&b'.') {
            pos += 1;
            if digits(&mut pos) == 0 {
                return Err(Error::new(pos, "invalid number"));
            }
        }
        if matches!(buf.get(pos), Some(b'e' | b'E')) {
            pos += 1;
            if matches!(buf.get(pos), Some(b'+' | b'-')) {
                pos += 1;
            }
            if digits(&mut pos) == 0 {
                return Err(Error::new(pos, "invalid number"));
            }
        }
        self.end_atom(pos, "invalid number")?;
        Ok(&buf[start..pos])
    }

    fn literal(&mut self, word: &'static [u8]) -> Result<()> {
        self.ensure(0)?;
        let start = self.token(0);
        if !self.buf[start..].starts_with(word) {
            return Err(self.error("invalid literal"));
        }
        self.end_atom(start + word.len(), "invalid literal")
    }

    /// Consumes `null` if it is next and returns whether it was.
    pub fn take_null(&mut self) -> Result<bool> {
        if self.peek()? == Some(b'n') {
            self.literal(b"null")?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Skips one complete value of any kind, checking its syntax as strictly as if it were read.
    pub fn skip_value(&mut self) -> Result<()> {
        // `true` marks an object on the stack, `false` an array; `first` tracks commas.
        let mut stack: Vec<bool> = Vec::new();
        let mut first;
        loop {
            // At a value position.
            match self.peek()? {
                Some(b'{') => {
                    self.begin_object()?;
                    stack.push(true);
                    first = true;
                }
                Some(b'[') => {
                    self.begin_array()?;
                    stack.push(false);
                    first = true;
                }
                Some(b'"') => {
                    self.skip_str()?;
                    first = false;
                }
                Some(b't') => {
                    self.literal(b"true")?;
                    first = false;
                }
                Some(b'f') => {
                    self.literal(b"false")?;
                    first = false;
                }
                Some(b'n') => {
                    self.literal(b"null")?;
                    first = false;
                }
                Some(b'-' | b'0'..=b'9') => {
                    self.scan_number()?;
                    first = false;
                }
                Some(_) => return Err(self.error("expected a value")),
                None => return Err(self.error("unexpected end of input")),
            }
            // Find the next value position, closing containers as they end.
            loop {
                let Some(&is_object) = stack.last() else {
                    return Ok(());
                };
                let more = if is_object {
                    self.next_key(&mut first)?.is_some()
                } else {
                    self.next_element(&mut first)?
                };
                if more {
                    break;
                }
                stack.pop();
                first = false;
            }
        }
    }

    /// Checks that only whitespace remains.
    pub fn finish(&mut self) -> Result<()> {
        match self.peek()? {
            None => Ok(()),
            Some(_) => Err(self.error("trailing characters after the JSON value")),
        }
    }
}

/// Resolves the escapes of a string body, checking their syntax.
fn unescape(text: &str) -> std::result::Result<String, &'static str> {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let decoded = match chars.next() {
            Some('"') => '"',
            Some('\\') => '\\',
            Some('/') => '/',
            Some('b') => '\u{8}',
            Some('f') => '\u{c}',
            Some('n') => '\n',
            Some('r') => '\r',
            Some('t') => '\t',
            Some('u') => {
                let high = hex4(&mut chars)?;
                if (0xD800..0xDC00).contains(&high) {
                    // A surrogate pair must follow as a second \u escape.
                    if chars.next() != Some('\\') || chars.next() != Some('u') {
                        return Err("unpaired surrogate in a string");
                    }
                    let low = hex4(&mut chars)?;
                    if !(0xDC00..0xE000).contains(&low) {
                        return Err("unpaired surrogate in a string");
                    }
                    let code = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
                    char::from_u32(code).ok_or("invalid \\u escape in a string")?
                } else {
                    char::from_u32(high).ok_or("unpaired surrogate in a string")?
                }
            }
            Some(_) => return Err("invalid escape in a string"),
            None => return Err("unterminated escape in a string"),
        };
        out.push(decoded);
    }
    Ok(out)
}

fn hex4(chars: &mut std::str::Chars<'_>) -> std::result::Result<u32, &'static str> {
    let mut value = 0;
    for _ in 0..4 {
        let digit = chars
            .next()
            .and_then(|c| c.to_digit(16))
            .ok_or("invalid \\u escape in a string")?;
        value = value * 16 + digit;
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Walks any document with the reader alone, for comparison with serde_json.
    fn walk(input: &[u8]) -> Result<()> {
        let mut reader = Reader::new(input)?;
        reader.skip_value()?;
        reader.finish()
    }

    #[test]
    fn accepts_what_json_accepts() {
        let cases: &[&str] = &[
            "{}",
            "[]",
            " { \"a\" : [1, -2.5e+3, true, false, null, \"x\\ny\\u00e9\\ud83d\\ude00\"] } ",
            "\"plain\"",
            "0",
            "-0.0E1",
            "[[[[]]],{\"\":{}}]",
            "\u{feff}{}",
        ];
        for case in cases {
            assert_eq!(walk(case.as_bytes()), Ok(()), "{case}");
        }
    }

    #[test]
    fn refuses_what_json_refuses() {
        let cases: &[&str] = &[
            "",
            "{",
            "[1,]",
            "{\"a\":1,}",
            "{\"a\" 1}",
            "{a:1}",
            "[01]",
            "[1.]",
            "[.5]",
            "[1e]",
            "[tru]",
            "[nul]",
            "\"abc",
            "\"a\\x\"",
            "\"\\u12\"",
            "\"tab\there\"",
            "[1] 2",
            "[1 2]",
            "{\"a\":1 \"b\":2}",
            "\"\\ud800\"",
            "[\"\\udc00x\"]",
        ];
        for case in cases {
            assert!(walk(case.as_bytes()).is_err(), "accepted {case:?}");
        }
    }

    #[test]
    fn reads_across_refill_windows() {
        // Many tokens, then a string longer than two refill windows, then more tokens.
        let long = "x".repeat(CHUNKS_PER_REFILL * 64 * 2 + 17);
        let mut doc = String::from("[");
        for i in 0..5000 {
            doc.push_str(&format!("\"s{i}\", "));
        }
        doc.push_str(&format!(
            "\"{long}\", 1.5, null, {{\"k\": [true, \"\\u00e9\"]}}]"
        ));
        assert_eq!(walk(doc.as_bytes()), Ok(()));
        let mut reader = Reader::new(doc.as_bytes()).unwrap();
        reader.begin_array().unwrap();
        let mut first = true;
        let mut strings = 0;
        while reader.next_element(&mut first).unwrap() {
            if reader.peek().unwrap() == Some(b'"') {
                let s = reader.read_str().unwrap();
                assert!(s.starts_with('s') || s == long);
                strings += 1;
            } else {
                reader.skip_value().unwrap();
            }
        }
        assert_eq!(strings, 5001);
        reader.finish().unwrap();
        // A fault far into the document is found, at its offset.
        let at = doc.len() - 40;
        let mut bad = doc.clone().into_bytes();
        bad.insert(at, b'\t');
        bad.insert(at, b'"');
        bad.insert(at, b'"');
        let err = walk(&bad).unwrap_err();
        assert!(
            err.offset >= at - 2 && err.offset <= at + 3,
            "{err:?} vs {at}"
        );
    }

    #[test]
    fn refuses_invalid_utf8_in_strings() {
        assert!(walk(b"[\"\xff\"]").is_err());
        assert!(walk(b"[\"\xc3\"]").is_err());
        assert_eq!(walk("[\"é\"]".as_bytes()), Ok(()));
    }

    #[test]
    fn refuses_nesting_beyond_the_limit() {
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert!(walk(deep.as_bytes()).is_err());
        let fine = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert_eq!(walk(fine.as_bytes()), Ok(()));
    }

    #[test]
    fn unescapes_strings() {
        let mut reader = Reader::new(br#""a\"b\\c\/d\u0041\ud83d\ude00""#).unwrap();
        assert_eq!(reader.read_str().unwrap(), "a\"b\\c/dA\u{1F600}");
    }

    #[test]
    fn reads_unsigned_integers_only() {
        for (input, expected) in [
            ("42", Some(42)),
            ("0", Some(0)),
            ("-1", None),
            ("1.5", None),
            ("1e3", None),
        ] {
            let mut reader = Reader::new(input.as_bytes()).unwrap();
            assert_eq!(reader.read_u64().ok(), expected, "{input}");
        }
    }

    #[test]
    fn locates_errors_by_line_and_column() {
        let input = b"{\n  \"a\": [1,\n  ]\n}";
        let err = walk(input).unwrap_err();
        assert_eq!(err.locate(input), (3, 3));
    }

    #[test]
    fn skips_string_arrays_strictly() {
        let cases: &[(&str, Option<usize>)] = &[
            ("[]", Some(0)),
            (" [ ] ", Some(0)),
            ("[\"a\"]", Some(1)),
            ("[\"a\", \"b\",\n  \"c\"]", Some(3)),
            ("[\"a\\\"b\", \"c\"]", Some(2)),
            ("[\"c\", \"a\\u0041\"]", Some(2)),
            ("[\"a\" \"b\"]", None),
            ("[\"a\",]", None),
            ("[,\"a\"]", None),
            ("[\"a\", 1]", None),
            ("[1]", None),
            ("[\"a\"", None),
            ("[\"a", None),
            ("[\"a\tb\"]", None),
            ("[\"a\\qb\"]", None),
            ("[\"a\"}", None),
            // Found by fuzzing (fuzz/regressions/service_tags): the end of the input after a
            // comma, once a backslash or a non-ASCII byte has been seen, panicked slicing.
            ("[\"\\\\\",", None),
            ("[\"é\",", None),
            ("[\"\\n\", \"a\",  ", None),
        ];
        for (input, expected) in cases {
            let got = Reader::new(input.as_bytes()).and_then(|mut reader| {
                reader
                    .skip_string_array()
                    .and_then(|n| reader.finish().map(|()| n))
            });
            let _ = ();
            assert_eq!(got.ok(), *expected, "{input:?}");
            // The general reader agrees on validity.
            let valid = serde_json::from_str::<Vec<String>>(input).is_ok();
            assert_eq!(valid, expected.is_some(), "serde_json on {input:?}");
        }
    }

    #[test]
    fn simd_masks_agree_with_the_portable_definition() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            let mut chunk = [0u8; 64];
            for byte in chunk.iter_mut() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                // Bias towards the bytes the masks care about.
                *byte = match state % 10 {
                    0 => b'"',
                    1 => b'\\',
                    2 => b' ',
                    3 => b'\n',
                    4 => (state >> 8) as u8 % 0x20,
                    5 => b"{}[],:"[(state >> 8) as usize % 6],
                    _ => (state >> 16) as u8,
                };
            }
            #[cfg(target_arch = "x86_64")]
            for (name, masks) in simd::all() {
                assert_eq!(masks(&chunk), masks_portable(&chunk), "{name} on {chunk:?}");
            }
        }
    }

    #[test]
    fn escaped_quotes_across_chunk_boundaries() {
        // Backslash runs of every length ending at every offset around a 64-byte boundary.
        for run in 0..6 {
            for offset in 50..70 {
                let body = format!("{}{}\"x", "a".repeat(offset), "\\".repeat(run));
                let doc = format!("[\"{body}\"]");
                let ours = walk(doc.as_bytes()).is_ok();
                let theirs = serde_json::from_str::<Vec<String>>(&doc).is_ok();
                assert_eq!(ours, theirs, "run {run} offset {offset}: {doc}");
            }
        }
    }

    #[test]
    fn finds_string_ends_across_word_boundaries() {
        for len in 0..140 {
            let body = "x".repeat(len);
            let doc = format!("[\"{body}\",\"{body}\\\"q\"]");
            let mut reader = Reader::new(doc.as_bytes()).unwrap();
            reader.begin_array().unwrap();
            let mut first = true;
            assert!(reader.next_element(&mut first).unwrap());
            assert_eq!(reader.read_str().unwrap(), body);
            assert!(reader.next_element(&mut first).unwrap());
            assert_eq!(reader.read_str().unwrap(), format!("{body}\"q"));
            assert!(!reader.next_element(&mut first).unwrap());
            reader.finish().unwrap();
        }
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Arrays of strings, well-formed or not: the skim and serde_json agree.
            #[test]
            fn string_array_skim_agrees_with_serde_json(doc in "\\[[\" ,a\\\\\\]n]{0,16}\\]?") {
                let ours = Reader::new(doc.as_bytes()).and_then(|mut reader| reader.skip_string_array().and_then(|_| reader.finish())).is_ok();
                let theirs = serde_json::from_str::<Vec<String>>(&doc).is_ok();
                prop_assert_eq!(ours, theirs, "document {:?}", doc);
            }

            /// Random byte strings built from JSON's own alphabet: the reader and serde_json agree on
            /// which are valid documents.
            #[test]
            fn agrees_with_serde_json(doc in "[\\[\\]{}\",:0-9a-z\\\\ .eE+-]{0,24}") {
                let ours = walk(doc.as_bytes()).is_ok();
                let theirs = serde_json::from_str::<serde::de::IgnoredAny>(&doc).is_ok();
                prop_assert_eq!(ours, theirs, "document {:?}", doc);
            }

            /// Longer documents that cross 64-byte chunks, with escapes and UTF-8.
            #[test]
            fn agrees_with_serde_json_across_chunks(parts in prop::collection::vec("[\\[\\]{}\",: \\\\nu0aé\t]{0,12}", 0..16)) {
                let doc = parts.concat();
                let ours = walk(doc.as_bytes()).is_ok();
                let theirs = serde_json::from_str::<serde::de::IgnoredAny>(&doc).is_ok();
                prop_assert_eq!(ours, theirs, "document {:?}", doc);
            }
        }
    }
}
