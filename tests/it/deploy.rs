//! The container image and the deployment files against the code: `Dockerfile`,
//! `.dockerignore`, `docker-compose.yml` and `deploy/k8s/*.yaml`.
//!
//! Docker and Kubernetes do not run where these tests run, so they check what can be checked
//! without them: the YAML parses (a strict reader of the subset these files use, cross-checked
//! with PyYAML when it is installed); the image's binary path, user, port and health check, the
//! manifests' ports, probe paths and users agree with the code; and every command line in the
//! files is one the binary accepts. The two Indexed Jobs are run as Kubernetes would run them,
//! one process per index with its environment: the sharded run on the fixtures (the date commits
//! once, after every index), the sharded backfill as a dry run (every date goes to exactly one
//! index).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::{Command, Stdio};

use chrono::NaiveDate;
use serde_json::Value;

use crate::util::{Env, Output, FIXTURES};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const BIN: &str = env!("CARGO_BIN_EXE_nightshift");

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The YAML files these tests cover, relative to the repository.
fn yaml_files() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(Path::new(ROOT).join("deploy/k8s"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
        .map(|n| format!("deploy/k8s/{n}"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "deploy/k8s/ holds {files:?}");
    files.push("docker-compose.yml".into());
    files
}

// ---------------------------------------------------------------------------------------------
// A strict reader of the YAML these files use: block mappings and sequences, flow mappings and
// sequences on one line, quoted and plain scalars, `|` and `|-` block scalars, anchors and
// aliases, comments, `---` between documents. Anything else is an error rather than a guess,
// and so are plain scalars that YAML 1.1 readers (PyYAML, Kubernetes' go-yaml) would take for
// something else than YAML 1.2 ones (`yes`, `on`, `0755`, `9000:9000`, dates): quote them.

mod yaml {
    use std::collections::HashMap;

    use serde_json::{Map, Value};

    struct Line {
        no: usize,
        indent: usize,
        /// The line after its indentation, comments included (they are content in block
        /// scalars).
        text: String,
    }

    pub fn parse_all(src: &str) -> Result<Vec<Value>, String> {
        let mut docs = Vec::new();
        let mut lines = Vec::new();
        for (i, raw) in src.lines().enumerate() {
            if raw.trim_end() == "---" {
                docs.push(Parser::new(std::mem::take(&mut lines)).document()?);
                continue;
            }
            let body = raw.trim_start_matches([' ', '\t']);
            let ws = &raw[..raw.len() - body.len()];
            if ws.contains('\t') && !body.trim().is_empty() {
                return Err(format!("line {}: a tab in the indentation", i + 1));
            }
            lines.push(Line {
                no: i + 1,
                indent: ws.len(),
                text: body.trim_end().to_string(),
            });
        }
        docs.push(Parser::new(lines).document()?);
        Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
    }

    /// The text without its comment, if any.
    fn content(text: &str) -> &str {
        let (mut single, mut double, mut escaped) = (false, false, false);
        let mut prev = ' ';
        for (i, c) in text.char_indices() {
            if double {
                match c {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    '"' => double = false,
                    _ => {}
                }
            } else if single {
                single = c != '\'';
            } else {
                match c {
                    '#' if prev == ' ' => return text[..i].trim_end(),
                    '"' if " [{,".contains(prev) => double = true,
                    '\'' if " [{,".contains(prev) => single = true,
                    _ => {}
                }
            }
            prev = c;
        }
        text.trim_end()
    }

    /// How many flow brackets are open at the end of `s` (quoted text aside).
    fn open_brackets(s: &str) -> i32 {
        let (mut depth, mut quote, mut escaped) = (0, None, false);
        for c in s.chars() {
            match (quote, c) {
                (Some('"'), _) if escaped => escaped = false,
                (Some('"'), '\\') => escaped = true,
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '"' | '\'') => quote = Some(c),
                (None, '[' | '{') => depth += 1,
                (None, ']' | '}') => depth -= 1,
                _ => {}
            }
        }
        depth
    }

    fn is_item(c: &str) -> bool {
        c == "-" || c.starts_with("- ")
    }

    /// `key: rest` of a block mapping line (the key unquoted), if it is one.
    fn split_key(c: &str) -> Option<(String, String)> {
        if c.starts_with(['"', '\'']) {
            let q = c.chars().next().unwrap();
            let end = c[1..].find(q)? + 1;
            let rest = c[end + 1..].strip_prefix(':')?;
            if !(rest.is_empty() || rest.starts_with(' ')) {
                return None;
            }
            return Some((c[1..end].to_string(), rest.trim().to_string()));
        }
        if c.starts_with(['[', '{', '&', '*']) {
            return None;
        }
        // The first `: ` (or a final `:`) outside flow brackets.
        let mut depth = 0i32;
        let at = c.char_indices().find_map(|(i, ch)| {
            match ch {
                '[' | '{' => depth += 1,
                ']' | '}' => depth -= 1,
                ':' if depth == 0 && (c[i + 1..].is_empty() || c[i + 1..].starts_with(' ')) => {
                    return Some(i)
                }
                _ => {}
            }
            None
        })?;
        let key = c[..at].trim();
        (!key.is_empty()).then(|| (key.to_string(), c[at + 1..].trim().to_string()))
    }

    struct Parser {
        lines: Vec<Line>,
        pos: usize,
        anchors: HashMap<String, Value>,
    }

    impl Parser {
        fn new(lines: Vec<Line>) -> Self {
            Self {
                lines,
                pos: 0,
                anchors: HashMap::new(),
            }
        }

        fn err<T>(&self, msg: &str) -> Result<T, String> {
            let no = self.lines.get(self.pos).map_or(0, |l| l.no);
            Err(format!("line {no}: {msg}"))
        }

        /// The indentation of the next line with content, skipping blank and comment lines.
        fn peek(&mut self) -> Option<usize> {
            while self.pos < self.lines.len() && content(&self.lines[self.pos].text).is_empty() {
                self.pos += 1;
            }
            self.lines.get(self.pos).map(|l| l.indent)
        }

        fn current(&self) -> String {
            content(&self.lines[self.pos].text).to_string()
        }

        fn document(mut self) -> Result<Value, String> {
            let Some(indent) = self.peek() else {
                return Ok(Value::Null);
            };
            if indent != 0 {
                return self.err("a document must start at column 0");
            }
            let v = self.block(0)?;
            if self.peek().is_some() {
                return self.err("unexpected line after the document");
            }
            Ok(v)
        }

        /// The node whose first line is the current one, at `indent`.
        fn block(&mut self, indent: usize) -> Result<Value, String> {
            let c = self.current();
            if is_item(&c) {
                self.seq(indent)
            } else if split_key(&c).is_some() {
                self.map(indent)
            } else {
                self.pos += 1;
                self.value(&c, indent, false)
            }
        }

        fn seq(&mut self, indent: usize) -> Result<Value, String> {
            let mut items = Vec::new();
            while let Some(at) = self.peek() {
                if at < indent {
                    break;
                }
                if at > indent {
                    return self.err("unexpected indentation in a sequence");
                }
                if !is_item(&self.current()) {
                    break;
                }
                let text = self.lines[self.pos].text.clone();
                let rest = text[1..].trim_start();
                if content(rest).is_empty() {
                    self.pos += 1;
                    match self.peek() {
                        Some(i) if i > indent => items.push(self.block(i)?),
                        _ => items.push(Value::Null),
                    }
                    continue;
                }
                // The item's node starts on this line, after "- ".
                let offset = indent + (text.len() - rest.len());
                let line = &mut self.lines[self.pos];
                line.indent = offset;
                line.text = rest.to_string();
                let c = self.current();
                if split_key(&c).is_some() {
                    items.push(self.map(offset)?);
                } else {
                    self.pos += 1;
                    items.push(self.value(&c, indent, false)?);
                }
            }
            Ok(Value::Array(items))
        }

        fn map(&mut self, indent: usize) -> Result<Value, String> {
            let mut m = Map::new();
            while let Some(at) = self.peek() {
                if at < indent {
                    break;
                }
                if at > indent {
                    return self.err("unexpected indentation in a mapping");
                }
                let c = self.current();
                if is_item(&c) {
                    break;
                }
                let Some((key, rest)) = split_key(&c) else {
                    return self.err("expected `key: value`");
                };
                if key == "<<" {
                    return self.err("merge keys are not supported");
                }
                let no = self.lines[self.pos].no;
                self.pos += 1;
                let v = self.value(&rest, indent, true)?;
                if m.insert(key.clone(), v).is_some() {
                    return Err(format!("line {no}: duplicate key '{key}'"));
                }
            }
            Ok(Value::Object(m))
        }

        /// The value after `key:` or `- ` (already consumed), whose parent is at `parent`.
        fn value(&mut self, rest: &str, parent: usize, in_map: bool) -> Result<Value, String> {
            let (anchor, rest) = match rest.strip_prefix('&') {
                Some(r) => {
                    let (name, r) = r.split_once(' ').unwrap_or((r, ""));
                    (Some(name.to_string()), r.trim())
                }
                None => (None, rest),
            };
            let v = if let Some(name) = rest.strip_prefix('*') {
                match self.anchors.get(name) {
                    Some(v) => v.clone(),
                    None => return self.err(&format!("unknown alias *{name}")),
                }
            } else if rest == "|" || rest == "|-" {
                self.block_scalar(parent, rest == "|-")?
            } else if rest.starts_with(['|', '>']) {
                return self.err("only `|` and `|-` block scalars are supported");
            } else if rest.is_empty() {
                match self.peek() {
                    Some(i) if i > parent => self.block(i)?,
                    Some(i) if i == parent && in_map && is_item(&self.current()) => self.seq(i)?,
                    _ => Value::Null,
                }
            } else {
                // A flow collection may go on over the next lines, until its brackets close.
                let mut rest = rest.to_string();
                while rest.starts_with(['[', '{']) && open_brackets(&rest) > 0 {
                    let Some(l) = self.lines.get(self.pos) else {
                        return self.err("unterminated flow collection");
                    };
                    rest = format!("{rest} {}", content(&l.text));
                    self.pos += 1;
                }
                flow(&rest).map_err(|e| {
                    let no = self.lines[self.pos - 1].no;
                    format!("line {no}: {e}")
                })?
            };
            if let Some(name) = anchor {
                self.anchors.insert(name, v.clone());
            }
            Ok(v)
        }

        fn block_scalar(&mut self, parent: usize, strip: bool) -> Result<Value, String> {
            let mut lines: Vec<String> = Vec::new();
            let mut block_indent = None;
            while let Some(l) = self.lines.get(self.pos) {
                if l.text.is_empty() {
                    lines.push(String::new());
                } else if l.indent <= parent {
                    break;
                } else {
                    let bi = *block_indent.get_or_insert(l.indent);
                    if l.indent < bi {
                        return self
                            .err("a line of a block scalar is indented less than its first");
                    }
                    lines.push(format!("{}{}", " ".repeat(l.indent - bi), l.text));
                }
                self.pos += 1;
            }
            while lines.last().is_some_and(String::is_empty) {
                lines.pop();
            }
            let mut s = lines.join("\n");
            if !strip && !s.is_empty() {
                s.push('\n');
            }
            Ok(Value::String(s))
        }
    }

    /// A value on one line: a flow collection, a quoted or a plain scalar.
    fn flow(s: &str) -> Result<Value, String> {
        let chars: Vec<char> = s.chars().collect();
        let mut f = Flow { c: chars, i: 0 };
        let v = f.node(false)?;
        f.ws();
        if f.i < f.c.len() {
            return Err(format!("unexpected characters after a value: {s:?}"));
        }
        Ok(v)
    }

    struct Flow {
        c: Vec<char>,
        i: usize,
    }

    impl Flow {
        fn peek(&self) -> Option<char> {
            self.c.get(self.i).copied()
        }

        fn ws(&mut self) {
            while self.peek() == Some(' ') {
                self.i += 1;
            }
        }

        fn expect(&mut self, c: char) -> Result<(), String> {
            self.ws();
            if self.peek() == Some(c) {
                self.i += 1;
                Ok(())
            } else {
                Err(format!("expected '{c}' at column {}", self.i + 1))
            }
        }

        fn node(&mut self, in_flow: bool) -> Result<Value, String> {
            self.ws();
            match self.peek() {
                Some('{') => {
                    self.i += 1;
                    let mut m = Map::new();
                    loop {
                        self.ws();
                        if self.peek() == Some('}') {
                            self.i += 1;
                            break;
                        }
                        let key = match self.peek() {
                            Some('"' | '\'') => self.quoted()?,
                            _ => self.plain(true, true).trim().to_string(),
                        };
                        self.expect(':')?;
                        let v = self.node(true)?;
                        if m.insert(key.clone(), v).is_some() {
                            return Err(format!("duplicate key '{key}'"));
                        }
                        self.ws();
                        match self.peek() {
                            Some(',') => self.i += 1,
                            Some('}') => {}
                            _ => return Err("expected ',' or '}'".into()),
                        }
                    }
                    Ok(Value::Object(m))
                }
                Some('[') => {
                    self.i += 1;
                    let mut items = Vec::new();
                    loop {
                        self.ws();
                        if self.peek() == Some(']') {
                            self.i += 1;
                            break;
                        }
                        items.push(self.node(true)?);
                        self.ws();
                        match self.peek() {
                            Some(',') => self.i += 1,
                            Some(']') => {}
                            _ => return Err("expected ',' or ']'".into()),
                        }
                    }
                    Ok(Value::Array(items))
                }
                Some('"' | '\'') => Ok(Value::String(self.quoted()?)),
                _ => resolve(&self.plain(in_flow, false)),
            }
        }

        fn quoted(&mut self) -> Result<String, String> {
            let q = self.peek().unwrap();
            self.i += 1;
            let mut s = String::new();
            loop {
                let Some(c) = self.peek() else {
                    return Err("unterminated quoted scalar".into());
                };
                self.i += 1;
                match c {
                    '\'' if q == '\'' => {
                        if self.peek() == Some('\'') {
                            self.i += 1;
                            s.push('\'');
                        } else {
                            return Ok(s);
                        }
                    }
                    '"' if q == '"' => return Ok(s),
                    '\\' if q == '"' => {
                        let e = self.peek().ok_or("unterminated escape")?;
                        self.i += 1;
                        s.push(match e {
                            'n' => '\n',
                            't' => '\t',
                            '\\' => '\\',
                            '"' => '"',
                            '/' => '/',
                            other => return Err(format!("unsupported escape \\{other}")),
                        });
                    }
                    c => s.push(c),
                }
            }
        }

        /// A plain scalar: to the end of the line, or in a flow collection to `,`, `]`, `}`
        /// (and to `:` for a key).
        fn plain(&mut self, in_flow: bool, key: bool) -> String {
            let start = self.i;
            while let Some(c) = self.peek() {
                if in_flow && (c == ',' || c == ']' || c == '}') {
                    break;
                }
                if key && c == ':' {
                    break;
                }
                self.i += 1;
            }
            self.c[start..self.i].iter().collect()
        }
    }

    /// The value of a plain scalar, refusing those YAML 1.1 and 1.2 readers disagree on.
    fn resolve(p: &str) -> Result<Value, String> {
        let t = p.trim();
        let all = |s: &str, f: fn(char) -> bool| !s.is_empty() && s.chars().all(f);
        let digits = |s: &str| all(s, |c| c.is_ascii_digit());
        let unsigned = t.strip_prefix(['-', '+']).unwrap_or(t);
        if t.starts_with(['!', '&', '*', '|', '>', '%', '@', '`', '#']) {
            return Err(format!("a plain scalar cannot start with {:?}", &t[..1]));
        }
        if t.contains(": ") || t.contains(" #") {
            return Err(format!("ambiguous plain scalar {t:?}: quote it"));
        }
        let ambiguous = || Err(format!("ambiguous plain scalar {t:?}: quote it"));
        match t {
            "" | "~" | "null" | "Null" | "NULL" => return Ok(Value::Null),
            "true" | "True" | "TRUE" => return Ok(Value::Bool(true)),
            "false" | "False" | "FALSE" => return Ok(Value::Bool(false)),
            _ => {}
        }
        if ["y", "n", "yes", "no", "on", "off"].contains(&t.to_ascii_lowercase().as_str()) {
            return ambiguous();
        }
        if digits(unsigned) {
            if unsigned.len() > 1 && unsigned.starts_with('0') {
                return ambiguous(); // octal in YAML 1.1
            }
            return t.parse::<i64>().map(Value::from).map_err(|e| e.to_string());
        }
        if unsigned.starts_with("0x") || unsigned.starts_with("0o") || unsigned.starts_with("0b") {
            return ambiguous();
        }
        // Base-60 numbers (YAML 1.1): 9000:9000, 1:30.
        if t.split(':').count() > 1 && t.split(':').all(digits) {
            return ambiguous();
        }
        // Dates and timestamps (YAML 1.1): 2026-11-03.
        if t.len() >= 8
            && digits(&t[..4])
            && t[4..].starts_with('-')
            && t[5..6].chars().all(|c| c.is_ascii_digit())
        {
            return ambiguous();
        }
        if unsigned.contains('.')
            && all(unsigned, |c| c.is_ascii_digit() || c == '.')
            && unsigned.matches('.').count() == 1
            && unsigned != "."
        {
            return t.parse::<f64>().map(Value::from).map_err(|e| e.to_string());
        }
        let numeric = unsigned.chars().any(|c| c.is_ascii_digit())
            && all(unsigned, |c| c.is_ascii_digit() || "eE.+-_".contains(c));
        let special = unsigned.starts_with('.')
            && ["inf", "nan"].contains(&unsigned[1..].to_ascii_lowercase().as_str());
        if numeric || special {
            return ambiguous(); // 1e3, 1_000, .inf, .nan
        }
        Ok(Value::String(t.to_string()))
    }

    #[test]
    fn the_reader_reads_what_the_files_use_and_refuses_the_rest() {
        let v = &parse_all(
            "a: 1 # c\nb:\n  - x\n  - {k: v, n: [1, \"two\"]}\n  - k2: 'it''s'\n    k3: |\n      line # kept\n      two\nc:\n- &anc {q: 1}\nd: *anc\n---\ne: \"x: #y\"\n",
        )
        .unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(
            v[0],
            serde_json::json!({"a": 1, "b": ["x", {"k": "v", "n": [1, "two"]},
                {"k2": "it's", "k3": "line # kept\ntwo\n"}], "c": [{"q": 1}], "d": {"q": 1}})
        );
        assert_eq!(v[1], serde_json::json!({"e": "x: #y"}));
        assert_eq!(
            parse_all("f: [\"a\", # c\n    \"b]\",\n    1]\ng: 2\n").unwrap()[0],
            serde_json::json!({"f": ["a", "b]", 1], "g": 2})
        );
        for bad in [
            "a: 1\na: 2\n",
            "a: yes\n",
            "a: 0755\n",
            "p: 9000:9000\n",
            "d: 2026-11-03\n",
            "a:\n\t- x\n",
            "a: >\n  folded\n",
            "a: *nothing\n",
            "a: 1\n   b: 2\n",
            "a: 1e3\n",
            "a: .inf\n",
        ] {
            assert!(parse_all(bad).is_err(), "accepted {bad:?}");
        }
    }
}

/// Every YAML file, parsed.
fn parsed() -> Vec<(String, Vec<Value>)> {
    yaml_files()
        .into_iter()
        .map(|f| {
            let docs = yaml::parse_all(&read(&f)).unwrap_or_else(|e| panic!("{f}: {e}"));
            (f, docs)
        })
        .collect()
}

fn at<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(v, |v, k| &v[*k])
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

// ---------------------------------------------------------------------------------------------
// The Dockerfile.

struct Instruction {
    op: String,
    args: String,
}

/// The Dockerfile's instructions, continuation lines joined and comments dropped.
fn dockerfile() -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in read("Dockerfile").lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && cur.is_empty()) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(part) => {
                cur.push_str(part.trim_end());
                cur.push(' ');
            }
            None => {
                cur.push_str(t);
                let (op, args) = cur.split_once(' ').unwrap_or((&cur, ""));
                out.push(Instruction {
                    op: op.to_ascii_uppercase(),
                    args: args.trim().to_string(),
                });
                cur.clear();
            }
        }
    }
    assert!(cur.is_empty(), "the Dockerfile ends inside a continuation");
    out
}

fn json_form(args: &str) -> Vec<String> {
    serde_json::from_str(args).unwrap_or_else(|e| panic!("not in JSON (exec) form: {args}: {e}"))
}

/// The stages: (base image with ARG defaults substituted, stage name, instructions).
fn stages() -> Vec<(String, Option<String>, Vec<Instruction>)> {
    let mut args: HashMap<String, String> = HashMap::new();
    let mut stages: Vec<(String, Option<String>, Vec<Instruction>)> = Vec::new();
    for i in dockerfile() {
        if i.op == "FROM" {
            let words: Vec<&str> = i.args.split_whitespace().collect();
            let mut image = words[0].to_string();
            for (k, v) in &args {
                image = image.replace(&format!("${{{k}}}"), v);
            }
            let name = match words.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => Some(name.to_string()),
                [_] => None,
                other => panic!("FROM {other:?}"),
            };
            stages.push((image, name, Vec::new()));
        } else if stages.is_empty() {
            assert_eq!(i.op, "ARG", "only ARG may come before the first FROM");
            let (k, v) = i
                .args
                .split_once('=')
                .expect("ARG NAME=default before FROM");
            args.insert(k.to_string(), v.to_string());
        } else {
            stages.last_mut().unwrap().2.push(i);
        }
    }
    stages
}

fn one<'a>(instrs: &'a [Instruction], op: &str) -> &'a str {
    let found: Vec<&Instruction> = instrs.iter().filter(|i| i.op == op).collect();
    assert_eq!(found.len(), 1, "exactly one {op} in the final stage");
    &found[0].args
}

/// (major, minor, patch) of a version string.
fn version(v: &str) -> (u32, u32, u32) {
    let mut p = v
        .split('.')
        .map(|x| x.parse::<u32>().unwrap_or_else(|_| panic!("version {v}")));
    (
        p.next().unwrap(),
        p.next().unwrap_or(0),
        p.next().unwrap_or(0),
    )
}

/// The daemon's default port, as `nightshift daemon --help` shows it.
fn default_port() -> u16 {
    let help = run_bin(&["daemon", "--help"], &[], Path::new(ROOT));
    assert_eq!(help.code, 0, "{}", help.stderr);
    let at = help
        .stdout
        .find("[default: 127.0.0.1:")
        .expect("--listen shows its default");
    let rest = &help.stdout[at + "[default: 127.0.0.1:".len()..];
    rest[..rest.find(']').unwrap()].parse().unwrap()
}

/// The routes the daemon serves, from the router in src/daemon/http.rs.
fn routes() -> BTreeSet<String> {
    read("src/daemon/http.rs")
        .split(".route(\"")
        .skip(1)
        .map(|r| r[..r.find('"').unwrap()].to_string())
        .collect()
}

#[test]
fn the_image_builds_the_binary_locked_and_runs_it_as_a_numeric_non_root_user() {
    let stages = stages();
    assert!(
        stages.len() >= 2,
        "multi-stage: a build stage and a runtime stage"
    );
    let cargo: toml::Table = read("Cargo.toml").parse().unwrap();
    let package = cargo["package"].as_table().unwrap();
    // The package's one binary is nightshift (the fixture generator is an example).
    assert_eq!(package["name"].as_str(), Some("nightshift"));
    assert!(!std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/bin")
        .exists());
    let bin = "nightshift";
    let floor = version(package["rust-version"].as_str().unwrap());

    // The build stage: a pinned Rust image no older than rust-version, and the locked build.
    let (build_image, build_name, build) = &stages[0];
    let build_name = build_name.as_deref().expect("the build stage is named");
    let tag = build_image
        .strip_prefix("rust:")
        .expect("builds on the official rust image");
    let pinned = tag.split('-').next().unwrap();
    assert_eq!(
        pinned.split('.').count(),
        3,
        "rust image pinned to x.y.z: {build_image}"
    );
    assert!(
        version(pinned) >= floor,
        "{build_image} is older than rust-version"
    );
    assert!(
        build.iter().any(|i| i.op == "RUN"
            && i.args
                .contains(&format!("cargo build --release --locked --bin {bin}"))),
        "the build stage runs cargo build --release --locked --bin {bin}"
    );

    // The runtime stage: a pinned base, the binary on PATH, a numeric non-root user.
    let (runtime_image, _, runtime) = stages.last().unwrap();
    let (_, base_tag) = runtime_image
        .split_once(':')
        .expect("the runtime base has a tag");
    assert!(
        base_tag.chars().next().unwrap().is_ascii_digit() || runtime_image.contains('@'),
        "the runtime base is pinned to a version or digest: {runtime_image}"
    );
    let path = format!("/usr/local/bin/{bin}");
    assert!(
        runtime.iter().any(|i| i.op == "COPY"
            && i.args.starts_with(&format!("--from={build_name} "))
            && i.args.ends_with(&format!(" {path}"))),
        "the runtime stage copies the binary to {path}"
    );
    assert_eq!(json_form(one(runtime, "ENTRYPOINT")), [bin]);
    let user = one(runtime, "USER");
    let (uid, gid) = user.split_once(':').unwrap_or((user, user));
    let uid: u32 = uid
        .parse()
        .expect("USER is numeric (runAsNonRoot checks a number)");
    let _: u32 = gid.parse().expect("the group is numeric");
    assert_ne!(uid, 0, "not root");
    assert!(
        runtime
            .iter()
            .any(|i| i.op == "RUN" && i.args.contains(&format!("--uid {uid}"))),
        "the user {uid} exists in the image (useradd --uid {uid})"
    );

    // The default command: the daemon on all interfaces at the port the code defaults to,
    // which the image exposes and its health check polls at the path the router serves.
    let port = default_port();
    let cmd = json_form(one(runtime, "CMD"));
    assert_eq!(cmd[0], "daemon");
    assert_eq!(
        flag(&cmd, "--listen").as_deref(),
        Some(format!("0.0.0.0:{port}").as_str())
    );
    assert_eq!(one(runtime, "EXPOSE"), port.to_string());
    let health = one(runtime, "HEALTHCHECK");
    let probe = json_form(&health[health.find("CMD [").expect("HEALTHCHECK CMD [...]") + 4..]);
    assert!(
        probe.contains(&format!("http://127.0.0.1:{port}/healthz")),
        "{probe:?}"
    );
    assert!(routes().contains("/healthz"));
    assert!(
        runtime.iter().any(|i| i.op == "RUN"
            && i.args.contains("apt-get install")
            && i.args.contains(&format!(" {} ", probe[0]))),
        "the runtime stage installs {}, which the health check runs",
        probe[0]
    );
}

#[test]
fn the_build_context_is_only_what_the_dockerfile_copies() {
    let patterns: Vec<String> = read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    assert_eq!(
        patterns.first().map(String::as_str),
        Some("*"),
        "leave everything out first"
    );
    let kept: BTreeSet<&str> = patterns[1..]
        .iter()
        .map(|p| {
            p.strip_prefix('!')
                .expect("then let back in")
                .trim_end_matches('/')
        })
        .collect();
    // Every source the Dockerfile copies from the context, and nothing else, is let back in.
    let copied: BTreeSet<String> = dockerfile()
        .iter()
        .filter(|i| i.op == "COPY" && !i.args.starts_with("--from"))
        .flat_map(|i| {
            let words: Vec<&str> = i.args.split_whitespace().collect();
            words[..words.len() - 1]
                .iter()
                .map(|w| w.trim_end_matches('/').to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(
        kept.iter().map(|k| k.to_string()).collect::<BTreeSet<_>>(),
        copied
    );
    for big in ["target", "out", ".git"] {
        assert!(!kept.contains(big), "{big} stays out of the context");
    }
}

#[test]
fn the_yaml_files_parse_and_each_kubernetes_object_names_its_kind() {
    for (file, docs) in parsed() {
        assert!(!docs.is_empty(), "{file}: no document");
        if file.starts_with("deploy/k8s/") {
            for d in &docs {
                for key in ["apiVersion", "kind"] {
                    assert!(d[key].is_string(), "{file}: an object without {key}");
                }
                assert!(
                    d["metadata"]["name"].is_string(),
                    "{file}: an object without a name"
                );
            }
        }
    }
    // PyYAML, where installed, reads the same values.
    let files = yaml_files();
    let script = "import json, sys, yaml\n\
                  print(json.dumps([[d for d in yaml.safe_load_all(open(f)) if d is not None] for f in sys.argv[1:]], default=str))";
    let py = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(&files)
        .current_dir(ROOT)
        .output();
    match py {
        Ok(out) if out.status.success() => {
            let theirs: Vec<Vec<Value>> = serde_json::from_slice(&out.stdout).unwrap();
            for ((file, ours), theirs) in parsed().iter().zip(&theirs) {
                assert_eq!(ours, theirs, "{file}: PyYAML reads it differently");
            }
        }
        _ => eprintln!("PyYAML is not installed: the files were read by the strict reader only"),
    }
}

// ---------------------------------------------------------------------------------------------
// The Kubernetes objects.

/// A pod template of a manifest, with what runs in it.
struct Workload {
    file: String,
    kind: String,
    name: String,
    /// The Job spec (of a Job, or of a CronJob's jobTemplate).
    job: Option<Value>,
    pod: Value,
}

fn workloads() -> Vec<Workload> {
    let mut out = Vec::new();
    for (file, docs) in parsed() {
        if !file.starts_with("deploy/k8s/") {
            continue;
        }
        for d in docs {
            let kind = s(&d["kind"]).to_string();
            let name = s(&d["metadata"]["name"]).to_string();
            let (job, pod) = match kind.as_str() {
                "Deployment" => (None, at(&d, &["spec", "template", "spec"]).clone()),
                "Job" => (
                    Some(d["spec"].clone()),
                    at(&d, &["spec", "template", "spec"]).clone(),
                ),
                "CronJob" => {
                    let job = at(&d, &["spec", "jobTemplate", "spec"]).clone();
                    let pod = at(&job, &["template", "spec"]).clone();
                    (Some(job), pod)
                }
                "Service" | "ConfigMap" | "Secret" => continue,
                other => panic!("{file}: no check for a {other}"),
            };
            out.push(Workload {
                file: file.clone(),
                kind,
                name,
                job,
                pod,
            });
        }
    }
    assert!(out.len() >= 4);
    out
}

fn container(w: &Workload) -> &Value {
    let cs = w.pod["containers"].as_array().expect("containers");
    assert_eq!(cs.len(), 1, "{}: one container", w.file);
    &cs[0]
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map_or_else(Vec::new, |a| a.iter().map(|x| s(x).to_string()).collect())
}

/// What a container runs: the nightshift arguments, or a shell script that `exec`s nightshift.
enum Runs {
    Args(Vec<String>),
    Script(String),
}

fn runs(w: &Workload) -> Runs {
    let c = container(w);
    let command = strings(&c["command"]);
    let args = strings(&c["args"]);
    match command
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] => Runs::Args(args),
        ["/bin/sh", "-c"] => {
            assert_eq!(args.len(), 1, "{}: one script", w.file);
            Runs::Script(args[0].clone())
        }
        other => panic!("{}: command {other:?}", w.file),
    }
}

/// The nightshift arguments of a script's `exec nightshift ...` line, shell words split (a
/// command substitution left as it is).
fn script_args(script: &str) -> Vec<String> {
    let script = script.replace("\\\n", " ");
    let line = script
        .lines()
        .find_map(|l| l.trim().strip_prefix("exec nightshift "))
        .expect("the script execs nightshift");
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    assert!(!quoted, "unbalanced quotes in {line}");
    if !cur.is_empty() {
        words.push(cur);
    }
    words
}

fn argv(w: &Workload) -> Vec<String> {
    match runs(w) {
        Runs::Args(a) => a,
        Runs::Script(s) => script_args(&s),
    }
}

/// The value of `--flag VALUE` in a command line.
fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .map(|i| args[i + 1].clone())
}

/// The subcommand of a command line (its first word that is not a global option or a value).
fn subcommand(args: &[String]) -> String {
    let mut i = 0;
    while args[i].starts_with('-') {
        i += if args[i] == "--log-format" { 2 } else { 1 };
    }
    args[i].clone()
}

fn image_uid() -> i64 {
    let user = one(&stages().pop().unwrap().2, "USER").to_string();
    user.split(':').next().unwrap().parse().unwrap()
}

#[test]
fn pods_run_the_image_as_its_user_without_privileges() {
    let uid = image_uid();
    let images: BTreeSet<String> = workloads()
        .iter()
        .map(|w| s(&container(w)["image"]).to_string())
        .collect();
    assert_eq!(
        images.len(),
        1,
        "every manifest runs the same image: {images:?}"
    );
    for w in workloads() {
        let what = format!("{} ({} {})", w.file, w.kind, w.name);
        let psc = &w.pod["securityContext"];
        assert_eq!(psc["runAsNonRoot"], true, "{what}");
        assert_eq!(psc["runAsUser"], uid, "{what}: the image's USER");
        let c = container(&w);
        let sc = &c["securityContext"];
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{what}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{what}");
        assert_eq!(
            sc["capabilities"]["drop"],
            serde_json::json!(["ALL"]),
            "{what}"
        );
        assert!(
            c["resources"]["requests"]["cpu"].is_string(),
            "{what}: a CPU request"
        );
        assert!(
            c["resources"]["limits"]["memory"].is_string(),
            "{what}: a memory limit"
        );
        // The jobs folder the command reads is the ConfigMap's mount.
        let args = argv(&w);
        let jobs = flag(&args, "--jobs").expect("--jobs");
        let mounts = c["volumeMounts"].as_array().unwrap();
        let mount = mounts
            .iter()
            .find(|m| m["mountPath"] == jobs.as_str())
            .unwrap_or_else(|| panic!("{what}: {jobs} is not mounted"));
        let volume = w.pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap();
        assert!(
            volume["configMap"]["name"].is_string(),
            "{what}: the jobs come from a ConfigMap"
        );
        // Threads as many as the CPU request (without a CPU limit nightshift would take the
        // node's cores), for the one-shot commands.
        if w.job.is_some() {
            assert_eq!(w.pod["restartPolicy"], "Never", "{what}");
            let cpu = s(&c["resources"]["requests"]["cpu"]);
            assert_eq!(
                flag(&args, "--threads").as_deref(),
                Some(cpu),
                "{what}: --threads = the CPU request"
            );
        }
    }
}

#[test]
fn the_daemon_deployment_listens_and_is_probed_where_the_code_serves() {
    let port = default_port();
    let routes = routes();
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert!(routes.contains(path), "the router serves {path}");
    }
    let daemons: Vec<Workload> = workloads()
        .into_iter()
        .filter(|w| w.kind == "Deployment")
        .collect();
    assert_eq!(daemons.len(), 1);
    let w = &daemons[0];
    assert_eq!(
        w.pod["terminationGracePeriodSeconds"]
            .as_i64()
            .map(|s| s > 30),
        Some(true),
        "longer than the default shutdown_grace"
    );
    let c = container(w);
    let args = argv(w);
    assert_eq!(subcommand(&args), "daemon");
    assert_eq!(
        flag(&args, "--listen"),
        Some(format!("0.0.0.0:{port}")),
        "reachable in the pod"
    );
    let ports = c["ports"].as_array().unwrap();
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0]["containerPort"], port);
    let port_name = s(&ports[0]["name"]);
    assert_eq!(at(c, &["livenessProbe", "httpGet", "path"]), "/healthz");
    assert_eq!(at(c, &["readinessProbe", "httpGet", "path"]), "/readyz");
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(at(c, &[probe, "httpGet", "port"]), port_name);
    }
    let (_, docs) = parsed().into_iter().find(|(f, _)| *f == w.file).unwrap();
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let annotations = at(deployment, &["spec", "template", "metadata", "annotations"]);
    assert_eq!(annotations["prometheus.io/port"], port.to_string());
    assert_eq!(annotations["prometheus.io/path"], "/metrics");
    let service = docs
        .iter()
        .find(|d| d["kind"] == "Service")
        .expect("a Service");
    assert_eq!(
        service["spec"]["selector"],
        at(deployment, &["spec", "selector", "matchLabels"]).clone()
    );
    assert_eq!(at(service, &["spec", "ports"])[0]["targetPort"], port_name);
}

#[test]
fn indexed_jobs_give_each_pod_its_index_and_shards_match_completions() {
    let indexed: Vec<Workload> = workloads()
        .into_iter()
        .filter(|w| {
            w.job
                .as_ref()
                .is_some_and(|j| j["completionMode"] == "Indexed")
        })
        .collect();
    let commands: BTreeSet<String> = indexed.iter().map(|w| subcommand(&argv(w))).collect();
    assert_eq!(
        commands,
        BTreeSet::from(["backfill".to_string(), "run".to_string()])
    );
    let help = run_bin(&["run", "--help"], &[], Path::new(ROOT)).stdout;
    for w in &indexed {
        let what = format!("{} ({})", w.file, w.name);
        let job = w.job.as_ref().unwrap();
        let args = argv(w);
        let completions = job["completions"].as_i64().expect("completions");
        assert_eq!(
            flag(&args, "--shards"),
            Some(completions.to_string()),
            "{what}: --shards = completions"
        );
        assert!(
            job["parallelism"].as_i64().unwrap() <= completions,
            "{what}"
        );
        assert!(
            job["backoffLimitPerIndex"].as_i64().unwrap() >= 1,
            "{what}: retries per index"
        );
        // The index comes from Kubernetes (JOB_COMPLETION_INDEX), the default of --shard-index.
        assert_eq!(
            flag(&args, "--shard-index"),
            None,
            "{what}: the index is Kubernetes'"
        );
        assert!(
            help.contains("[env: JOB_COMPLETION_INDEX"),
            "--shard-index defaults to JOB_COMPLETION_INDEX"
        );
        let env = container(w)["env"].as_array().cloned().unwrap_or_default();
        let key = env.iter().find(|e| e["name"] == "NIGHTSHIFT_SHARD_RUN");
        if subcommand(&args) == "run" {
            // All pods of one sharded run share a key: the Job's uid.
            let key = key.unwrap_or_else(|| panic!("{what}: NIGHTSHIFT_SHARD_RUN"));
            assert_eq!(
                at(key, &["valueFrom", "fieldRef", "fieldPath"]),
                "metadata.labels['batch.kubernetes.io/controller-uid']"
            );
            assert!(
                help.contains("[env: NIGHTSHIFT_SHARD_RUN"),
                "--shard-run defaults to NIGHTSHIFT_SHARD_RUN"
            );
        } else {
            // A retried index must run the dates that failed again, not skip them.
            assert_eq!(
                flag(&args, "--reprocess").as_deref(),
                Some("failed"),
                "{what}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The command lines, run.

fn run_bin(args: &[&str], envs: &[(&str, &str)], dir: &Path) -> Output {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("NIGHTSHIFT_LOG")
        .env_remove("JOB_COMPLETION_INDEX")
        .env_remove("NIGHTSHIFT_SHARD_RUN")
        .envs(envs.iter().copied())
        .output()
        .expect("nightshift runs");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Every nightshift command line in the files: (where, arguments).
fn command_lines() -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = workloads()
        .iter()
        .map(|w| (format!("{} ({})", w.file, w.name), argv(w)))
        .collect();
    out.push((
        "Dockerfile CMD".into(),
        json_form(one(&stages().pop().unwrap().2, "CMD")),
    ));
    let compose = &parsed()
        .into_iter()
        .find(|(f, _)| f == "docker-compose.yml")
        .unwrap()
        .1[0];
    out.push((
        "docker-compose.yml (nightshift)".into(),
        strings(&compose["services"]["nightshift"]["command"]),
    ));
    out
}

/// The arguments with `--jobs` pointing elsewhere.
fn with_jobs(args: &[String], jobs: &Path) -> Vec<String> {
    let mut args = args.to_vec();
    let i = args.iter().position(|a| a == "--jobs").expect("--jobs");
    args[i + 1] = jobs.to_string_lossy().into_owned();
    args
}

#[test]
fn every_command_line_in_the_files_is_one_the_binary_accepts() {
    let missing = tempfile::tempdir().unwrap();
    let missing = missing.path().join("no-such-folder");
    for (what, args) in command_lines() {
        // The help of the subcommand lists every option the line uses.
        let sub = subcommand(&args);
        let help = run_bin(&[&sub, "--help"], &[], Path::new(ROOT));
        assert_eq!(help.code, 0, "{what}: nightshift {sub} --help");
        for a in args.iter().filter(|a| a.starts_with("--")) {
            assert!(
                help.stdout.contains(&format!("{a} ")),
                "{what}: `nightshift {sub} --help` does not list {a}"
            );
        }
        // Parsed as a whole: with the jobs folder missing, it gets as far as reading it (exit
        // 1, not clap's 2), so every option and value was accepted and nothing ran.
        let args: Vec<String> = match args.iter().position(|a| a.contains("$(")) {
            Some(i) => {
                let mut a = args.clone();
                a[i] = "2026-11-03".into(); // the script's command substitution, checked below
                a
            }
            None => args,
        };
        let args = with_jobs(&args, &missing);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run_bin(
            &argv,
            &[("JOB_COMPLETION_INDEX", "0"), ("NIGHTSHIFT_SHARD_RUN", "k")],
            Path::new(ROOT),
        );
        assert_eq!(out.code, 1, "{what}: nightshift {args:?}\n{}", out.stderr);
        assert!(
            out.stderr.contains("invalid job files"),
            "{what}: {}",
            out.stderr
        );
    }
}

/// A test folder whose jobs folder has `churn_nightly` on the fixtures, and churn@1.
fn fixture_env() -> Env {
    let env = Env::new();
    env.train_churn();
    env.job(
        "churn_nightly",
        &format!("{FIXTURES}/features/dt={{date}}/"),
        "",
    );
    env
}

fn indexed(command: &str) -> Workload {
    workloads()
        .into_iter()
        .find(|w| {
            w.job
                .as_ref()
                .is_some_and(|j| j["completionMode"] == "Indexed")
                && subcommand(&argv(w)) == command
        })
        .unwrap_or_else(|| panic!("an Indexed Job running `{command}`"))
}

#[test]
fn the_sharded_run_job_commits_its_date_once_after_every_index() {
    let w = indexed("run");
    let n = w.job.as_ref().unwrap()["completions"].as_u64().unwrap() as u32;
    let env = fixture_env();
    // The manifest's command line, on the fixtures' date, in the test folder.
    let mut args = with_jobs(&argv(&w), &env.path("jobs"));
    let d = args.iter().position(|a| a == "--date").unwrap();
    args[d + 1] = "2026-11-03".into();
    // What Kubernetes gives each pod: its index, and the Job's uid through the downward API.
    let uid = "5f0c1b7e-9a2d-4c61-8f53-2b9e0a7d4c11";
    let children: Vec<_> = (0..n)
        .map(|i| {
            Command::new(BIN)
                .args(&args)
                .current_dir(env.dir.path())
                .env("NO_COLOR", "1")
                .env_remove("NIGHTSHIFT_LOG")
                .env("JOB_COMPLETION_INDEX", i.to_string())
                .env("NIGHTSHIFT_SHARD_RUN", uid)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "index {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let output = env.path("out/scores/churn_nightly/dt=2026-11-03");
    let success: Value =
        serde_json::from_slice(&std::fs::read(output.join("_SUCCESS")).unwrap()).unwrap();
    let inputs = std::fs::read_dir(format!("{FIXTURES}/features/dt=2026-11-03"))
        .unwrap()
        .count();
    assert_eq!(
        success["files"].as_array().unwrap().len(),
        inputs,
        "one output per input object"
    );
    assert_eq!(
        success["shards"],
        serde_json::json!({"count": n, "run": uid})
    );
    // Each shard's manifest, and beside it its part of the drift profile.
    let manifests: BTreeSet<String> = std::fs::read_dir(output.join("_shards").join(uid))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| !f.ends_with(".profile.json"))
        .collect();
    let expected: BTreeSet<String> = (0..n)
        .map(|i| {
            format!(
                "{}.json",
                nightshift::shard::Shard::new(i, n, uid.into())
                    .unwrap()
                    .label()
            )
        })
        .collect();
    assert_eq!(manifests, expected, "one shard manifest per index");
}

#[test]
fn the_sharded_backfill_job_gives_every_date_to_exactly_one_index() {
    let w = indexed("backfill");
    let n = w.job.as_ref().unwrap()["completions"].as_u64().unwrap() as usize;
    let env = fixture_env();
    let mut args = with_jobs(&argv(&w), &env.path("jobs"));
    args.push("--dry-run".into());
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let date = |a: &str| NaiveDate::parse_from_str(&flag(&args, a).unwrap(), "%Y-%m-%d").unwrap();
    let range: Vec<NaiveDate> = date("--from")
        .iter_days()
        .take_while(|d| *d <= date("--to"))
        .collect();
    let mut seen: Vec<(NaiveDate, usize)> = Vec::new();
    for i in 0..n {
        let index = i.to_string();
        let out = run_bin(&argv, &[("JOB_COMPLETION_INDEX", &index)], env.dir.path());
        assert_eq!(out.code, 0, "index {i}: {}", out.stderr);
        // The plan's lines, one per date: "2026-07-01  run ...".
        seen.extend(
            out.stdout
                .lines()
                .filter_map(|l| NaiveDate::parse_from_str(l.get(..10)?, "%Y-%m-%d").ok())
                .map(|d| (d, i)),
        );
    }
    seen.sort();
    let expected: Vec<(NaiveDate, usize)> =
        range.iter().enumerate().map(|(p, d)| (*d, p % n)).collect();
    assert_eq!(
        seen, expected,
        "date i of the range goes to index i mod {n}, once"
    );
    assert!(
        std::fs::read_dir(env.path("out"))
            .unwrap()
            .all(|e| e.unwrap().file_name() == "registry"),
        "a dry run touches nothing"
    );
}

#[test]
fn the_cronjob_script_scores_yesterday_in_its_time_zone() {
    let w = workloads()
        .into_iter()
        .find(|w| w.kind == "CronJob")
        .expect("a CronJob");
    let Runs::Script(script) = runs(&w) else {
        panic!("the CronJob computes the date in a shell")
    };
    let c = container(&w);
    let tz = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "TZ")
        .expect("TZ");
    let tz = s(&tz["value"]);
    let (_, docs) = parsed().into_iter().find(|(f, _)| *f == w.file).unwrap();
    assert_eq!(
        docs[0]["spec"]["timeZone"], tz,
        "the shell's TZ is the schedule's"
    );
    // The script as the pod runs it, with `nightshift` on PATH and the test's jobs folder.
    let env = fixture_env();
    let bin = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(BIN, bin.path().join("nightshift")).unwrap();
    let jobs = flag(&script_args(&script), "--jobs").unwrap();
    let script = script.replace(&jobs, &env.path("jobs").to_string_lossy());
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let yesterday = || {
        let today = chrono::Utc::now()
            .with_timezone(&tz.parse::<chrono_tz::Tz>().unwrap())
            .date_naive();
        today.pred_opt().unwrap()
    };
    let before = yesterday();
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg(&script)
        .current_dir(env.dir.path())
        .env("PATH", path)
        .env("TZ", tz)
        .env("NO_COLOR", "1")
        .env_remove("NIGHTSHIFT_LOG")
        .output()
        .unwrap();
    let after = yesterday();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Yesterday has no fixture data, so the run fails for want of input; what matters is that
    // it ran, for the right date.
    assert_ne!(
        out.status.code(),
        Some(2),
        "clap refused it: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        [before, after]
            .iter()
            .any(|d| stdout.starts_with(&format!("churn_nightly {d} "))),
        "expected a run of {before}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn compose_runs_the_daemon_next_to_minio_on_the_example_jobs() {
    let port = default_port();
    let compose = &parsed()
        .into_iter()
        .find(|(f, _)| f == "docker-compose.yml")
        .unwrap()
        .1[0];
    let services = compose["services"].as_object().unwrap();
    for name in ["minio", "setup", "nightshift"] {
        assert!(services.contains_key(name), "service {name}");
    }
    assert_eq!(
        services["setup"]["depends_on"]["minio"]["condition"],
        "service_healthy"
    );
    let ns = &services["nightshift"];
    assert_eq!(ns["build"], ".", "built from the Dockerfile");
    assert_eq!(
        at(ns, &["depends_on", "setup", "condition"]),
        "service_completed_successfully"
    );
    let args = strings(&ns["command"]);
    assert_eq!(subcommand(&args), "daemon");
    assert_eq!(flag(&args, "--listen"), Some(format!("0.0.0.0:{port}")));
    assert!(strings(&ns["ports"]).contains(&format!("{port}:{port}")));
    let volumes = strings(&ns["volumes"]);
    let jobs = flag(&args, "--jobs").unwrap();
    assert!(
        volumes.contains(&format!("./jobs:{jobs}:ro")),
        "the example jobs at {jobs}: {volumes:?}"
    );
    // The example jobs' relative paths resolve in the image's working directory.
    let workdir = one(&stages().pop().unwrap().2, "WORKDIR").to_string();
    for rel in ["fixtures", "out"] {
        assert!(
            volumes
                .iter()
                .any(|v| v.contains(&format!(":{workdir}/{rel}"))),
            "{rel} mounted in {workdir}"
        );
    }
    let settings = read("jobs/nightshift.toml");
    assert!(
        settings.contains("\"out/"),
        "jobs/nightshift.toml keeps its paths under out/"
    );
    // nightshift reaches MinIO on the compose network with MinIO's own credentials.
    let env = &ns["environment"];
    let minio = &services["minio"]["environment"];
    assert_eq!(env["AWS_ENDPOINT_URL"], "http://minio:9000");
    assert_eq!(env["AWS_ACCESS_KEY_ID"], minio["MINIO_ROOT_USER"]);
    assert_eq!(env["AWS_SECRET_ACCESS_KEY"], minio["MINIO_ROOT_PASSWORD"]);
    assert!(env["AWS_REGION"].is_string());
}

#[test]
fn the_scale_out_doc_names_the_files_and_what_each_pod_writes() {
    let doc = read("docs/scale-out.md");
    let readme = read("deploy/k8s/README.md");
    for f in yaml_files().iter().filter(|f| f.starts_with("deploy/k8s/")) {
        let name = Path::new(f)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(readme.contains(&name), "deploy/k8s/README.md names {name}");
        if name.starts_with("sharded") {
            assert!(doc.contains(&name), "docs/scale-out.md names {name}");
        }
    }
    let label = nightshift::shard::Shard::new(3, 8, "KEY".into())
        .unwrap()
        .label();
    for needle in [
        "--shards",
        "JOB_COMPLETION_INDEX",
        "NIGHTSHIFT_SHARD_RUN",
        "batch.kubernetes.io/controller-uid",
        "_SUCCESS",
        &format!("_shards/KEY/{label}.json"),
    ] {
        assert!(doc.contains(needle), "docs/scale-out.md mentions {needle}");
    }
}
