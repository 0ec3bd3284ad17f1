//! Reading a TOML document field by field, so that every mistake in it is reported, each at
//! its own line and column.
//!
//! A `derive(Deserialize)` stops at the first error; a job author fixing a file wants all of
//! them. So each table is read one field at a time (each value still goes through serde), the
//! fields a table asks for are its schema, and whatever it did not ask for is an unknown field,
//! reported with the closest known name as a suggestion. This is as strict as
//! `deny_unknown_fields` and reports more.

use std::ops::Range;

use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use super::diag::{suggest, Reporter};

/// A value with the byte range it came from, for errors found after parsing.
#[derive(Debug, Clone)]
pub struct Located<T> {
    pub value: T,
    pub span: Range<usize>,
}

/// One table of a document being read: asks for fields by name and remembers which it asked for.
pub struct Table<'i> {
    /// Dotted name of the table, "" for the document root.
    name: String,
    table: DeTable<'i>,
    span: Range<usize>,
    known: Vec<&'static str>,
}

impl<'i> Table<'i> {
    pub fn root(doc: Spanned<DeTable<'i>>) -> Self {
        let span = doc.span();
        Self {
            name: String::new(),
            table: doc.into_inner(),
            span,
            known: Vec::new(),
        }
    }

    /// Where the table is written, for a mistake that no one field holds.
    pub fn span(&self) -> Range<usize> {
        self.span.clone()
    }

    fn key_name(&self, key: &str) -> String {
        if self.name.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.name)
        }
    }

    fn entry(&self, key: &str) -> Option<&Spanned<DeValue<'i>>> {
        self.table
            .iter()
            .find(|(k, _)| k.get_ref().as_ref() == key)
            .map(|(_, v)| v)
    }

    /// An optional field.
    pub fn optional<T: DeserializeOwned>(
        &mut self,
        rep: &mut Reporter,
        key: &'static str,
    ) -> Option<Located<T>> {
        self.known.push(key);
        let value = self.entry(key)?.clone();
        let span = value.span();
        match T::deserialize(ValueDeserializer::from(value)) {
            Ok(v) => Some(Located { value: v, span }),
            Err(e) => {
                let at = e.span().unwrap_or(span);
                rep.error(
                    at,
                    format!("field '{}': {}", self.key_name(key), e.message().trim()),
                );
                None
            }
        }
    }

    /// A field that must be present.
    pub fn required<T: DeserializeOwned>(
        &mut self,
        rep: &mut Reporter,
        key: &'static str,
        why: &str,
    ) -> Option<Located<T>> {
        let present = self.entry(key).is_some();
        let v = self.optional(rep, key);
        if !present {
            let scope = if self.name.is_empty() {
                String::new()
            } else {
                format!(" in [{}]", self.name)
            };
            rep.error(
                self.span.clone(),
                format!("missing field '{key}'{scope}{why}"),
            );
        }
        v
    }

    /// A sub-table; `None` (after reporting) if the key holds something else.
    pub fn table(&mut self, rep: &mut Reporter, key: &'static str) -> Option<Table<'i>> {
        self.known.push(key);
        let value = self.entry(key)?.clone();
        let span = value.span();
        match value.into_inner() {
            DeValue::Table(t) => Some(Table {
                name: self.key_name(key),
                table: t,
                span,
                known: Vec::new(),
            }),
            other => {
                rep.error(
                    span,
                    format!(
                        "'{}' must be a table, found {}",
                        self.key_name(key),
                        other.type_str()
                    ),
                );
                None
            }
        }
    }

    /// Every entry of this table as a sub-table, by key (for tables keyed by user names, such
    /// as `[drift.columns.NAME]`); entries that are not tables are reported.
    pub fn tables(mut self, rep: &mut Reporter) -> Vec<(String, Table<'i>)> {
        let mut out = Vec::new();
        for (key, value) in std::mem::take(&mut self.table) {
            let name = key.get_ref().to_string();
            let span = value.span();
            match value.into_inner() {
                DeValue::Table(t) => out.push((
                    name.clone(),
                    Table {
                        name: self.key_name(&name),
                        table: t,
                        span,
                        known: Vec::new(),
                    },
                )),
                other => rep.error(
                    span,
                    format!(
                        "'{}' must be a table, found {}",
                        self.key_name(&name),
                        other.type_str()
                    ),
                ),
            }
        }
        out
    }

    /// Reports every key of this table that nobody asked for.
    pub fn finish(self, rep: &mut Reporter) {
        for (key, _) in self.table.iter() {
            let k = key.get_ref().as_ref();
            if self.known.contains(&k) {
                continue;
            }
            let mut msg = format!("unknown field '{}'", self.key_name(k));
            match suggest(k, &self.known) {
                Some(s) => msg.push_str(&format!(", did you mean '{s}'?")),
                None => msg.push_str(&format!(", expected one of: {}", self.known.join(", "))),
            }
            rep.error(key.span(), msg);
        }
    }
}

/// Parses TOML syntax; a syntax error is reported and gives `None`.
pub fn parse<'i>(rep: &mut Reporter, source: &'i str) -> Option<Table<'i>> {
    match DeTable::parse(source) {
        Ok(doc) => Some(Table::root(doc)),
        Err(e) => {
            let first_line = e
                .message()
                .lines()
                .next()
                .unwrap_or("invalid TOML")
                .trim()
                .to_string();
            rep.error(
                e.span().unwrap_or(0..0),
                format!("invalid TOML: {first_line}"),
            );
            None
        }
    }
}
