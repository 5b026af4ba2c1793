//! Avro schema resolution for [`TrafficEvent`](crate::model::TrafficEvent), planned once per writer
//! schema. Pure: no I/O.
//!
//! A producer may write the datum with another schema than `schemas/traffic_event.avsc` (the
//! reader's): fields added (with or without defaults), removed, reordered, renamed with a reader
//! alias, `int`/`long`/`float` promoted, `bytes` read as `string`, or wrapped in a union (usually
//! with `null`). [`Plan::compile`] walks the two schemas once and turns that into a list of steps
//! over the writer's fields — read this one as `source`, `timestamp` or `value` (with its
//! promotion), or skip it whatever its type — so [`Plan::decode`] is a loop over the bytes that
//! allocates nothing, like the direct decoder. When the writer's schema has the reader's
//! canonical form and its fields' logical types are ones the direct decoder reads (not, say,
//! `timestamp-micros`, which the canonical form drops), the plan *is* the direct decoder. What cannot be resolved (a reader field the
//! writer lacks and that has no default, a type that does not promote) is a [`PlanError`] at
//! compile time, naming the field; a union branch that cannot be read (e.g. `null` where a value is
//! needed) is a per-record [`DecodeError`]. The tests hold [`Plan::decode`] equal to
//! `apache_avro::from_avro_datum(writer, _, Some(reader))`.

use std::borrow::Cow;

use apache_avro::schema::{Name, NamesRef, ResolvedSchema, UuidSchema};
use apache_avro::Schema;

use super::{AvroReader, DecodeError, EventView};

/// How deep named types may nest in a skipped field (a recursive type is refused, not skipped).
const MAX_SKIP_DEPTH: usize = 32;
/// How many skip nodes the writer-only fields may plan into: named types are expanded where they
/// are used, so a few types of many fields of the previous one would otherwise be exponential.
const MAX_SKIP_NODES: usize = 100_000;

/// Why a writer schema cannot be read as the reader's.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    #[error("the schema is not valid Avro: {0}")]
    Invalid(String),
    #[error("the writer schema is not a record")]
    NotARecord,
    #[error("field `{field}`: {reason}")]
    Field { field: String, reason: String },
}

fn field_error(field: &str, reason: impl Into<String>) -> PlanError {
    PlanError::Field {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// The reader field a writer field is read into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Source,
    Timestamp,
    Value,
}

impl Target {
    fn of(name: &str) -> Option<Target> {
        match name {
            "source" => Some(Target::Source),
            "timestamp" => Some(Target::Timestamp),
            "value" => Some(Target::Value),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Target::Source => "source",
            Target::Timestamp => "timestamp",
            Target::Value => "value",
        }
    }
}

/// How the writer encoded a value that is read (its promotion to the target is implied).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    String,
    Int,
    Long,
    Float,
    Double,
}

/// One branch of a writer union around a field that is read.
#[derive(Debug, Clone, PartialEq)]
enum Branch {
    Read(Read),
    Null,
    /// A branch of another type: the record cannot be read (per record, as Avro resolution fails).
    Other(&'static str),
}

/// How a writer-only value is stepped over.
#[derive(Debug, Clone, PartialEq)]
enum Skip {
    Nothing,
    Boolean,
    Varint,
    /// An enum's symbol index, below its number of symbols.
    Enum(usize),
    Fixed(usize),
    LengthPrefixed,
    /// A string: length-prefixed, and UTF-8 (else the datum is not valid Avro).
    Utf8,
    Array(Box<Skip>),
    Map(Box<Skip>),
    Union(Vec<Skip>),
    Record(Vec<Skip>),
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Read(Target, Read),
    ReadUnion(Target, Vec<Branch>),
    Skip(Skip),
}

/// Reader-side defaults for fields the writer lacks.
#[derive(Debug, Clone, Default, PartialEq)]
struct Defaults {
    source: Option<String>,
    timestamp: Option<i64>,
    value: Option<f64>,
}

/// How datums of one writer schema are read as `TrafficEvent`s.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan(Kind);

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    /// The writer's schema is the reader's: the direct decoder.
    Direct,
    /// Steps over the writer's fields, then defaults for reader fields the writer lacks.
    Resolved {
        steps: Vec<Step>,
        defaults: Defaults,
    },
}

impl Plan {
    /// The plan of the reader's own schema: the direct decoder.
    pub const DIRECT: Plan = Plan(Kind::Direct);

    /// Whether this is the direct decoder (the writer's schema is the reader's).
    pub fn is_direct(&self) -> bool {
        self.0 == Kind::Direct
    }

    /// The plan for datums written with `writer` (Avro schema JSON) read as `reader`.
    pub fn compile_str(writer: &str, reader: &str) -> Result<Plan, PlanError> {
        let parse = |text: &str| {
            guarded(|| Schema::parse_str(text).map_err(|e| PlanError::Invalid(e.to_string())))
        };
        Plan::compile(&parse(writer)?, &parse(reader)?)
    }

    /// The plan for datums written with `writer` read as `reader` (a record with the fields
    /// `source`, `timestamp` and `value`).
    pub fn compile(writer: &Schema, reader: &Schema) -> Result<Plan, PlanError> {
        guarded(|| Plan::compile_unguarded(writer, reader))
    }

    fn compile_unguarded(writer: &Schema, reader: &Schema) -> Result<Plan, PlanError> {
        if writer.canonical_form() == reader.canonical_form() && reads_directly(writer) {
            return Ok(Plan::DIRECT);
        }
        let Schema::Record(reader_record) = reader else {
            return Err(PlanError::Invalid(
                "the reader schema is not a record".into(),
            ));
        };
        let resolved =
            ResolvedSchema::try_from(writer).map_err(|e| PlanError::Invalid(e.to_string()))?;
        let names = resolved.get_names();
        let Schema::Record(writer_record) = follow(writer, names)? else {
            return Err(PlanError::NotARecord);
        };
        let mut steps = Vec::with_capacity(writer_record.fields.len());
        let mut seen = [false; 3];
        let mut budget = MAX_SKIP_NODES;
        for field in &writer_record.fields {
            let target = reader_record
                .fields
                .iter()
                .find(|r| r.name == field.name || r.aliases.contains(&field.name))
                .and_then(|r| Target::of(&r.name))
                .filter(|t| !seen[*t as usize]);
            let step = match target {
                Some(target) => {
                    seen[target as usize] = true;
                    read_step(target, &field.name, &field.schema, names)?
                }
                None => Step::Skip(skip_of(&field.schema, names, 0, &mut budget)?),
            };
            steps.push(step);
        }
        let mut defaults = Defaults::default();
        for target in [Target::Source, Target::Timestamp, Target::Value] {
            if seen[target as usize] {
                continue;
            }
            let name = target.name();
            let default = reader_record
                .fields
                .iter()
                .find(|r| r.name == name)
                .and_then(|r| r.default.as_ref())
                .ok_or_else(|| {
                    field_error(name, "missing from the writer schema and has no default")
                })?;
            let bad = || {
                field_error(
                    name,
                    format!("default {default} is not of the field's type"),
                )
            };
            match target {
                Target::Source => {
                    defaults.source = Some(default.as_str().ok_or_else(bad)?.to_owned())
                }
                Target::Timestamp => defaults.timestamp = Some(default.as_i64().ok_or_else(bad)?),
                Target::Value => defaults.value = Some(default.as_f64().ok_or_else(bad)?),
            }
        }
        Ok(Plan(Kind::Resolved { steps, defaults }))
    }

    /// Reads one event from the whole of `bytes` (not validated: see `codec::decode_event`).
    pub fn decode<'a>(&self, bytes: &'a [u8]) -> Result<EventView<'a>, DecodeError> {
        let mut reader = AvroReader { rest: bytes };
        let event = match &self.0 {
            Kind::Direct => EventView::read_avro(&mut reader)?,
            Kind::Resolved { steps, defaults } => {
                let (mut source, mut timestamp, mut value) = (None, None, None);
                for step in steps {
                    let (target, read) = match step {
                        Step::Skip(skip) => {
                            reader.skip(skip)?;
                            continue;
                        }
                        Step::Read(target, read) => (*target, *read),
                        Step::ReadUnion(target, branches) => {
                            let index = reader.long()?;
                            match usize::try_from(index).ok().and_then(|i| branches.get(i)) {
                                Some(Branch::Read(read)) => (*target, *read),
                                Some(Branch::Null) => return Err(DecodeError::NullField(target.name())),
                                Some(Branch::Other(kind)) => {
                                    return Err(DecodeError::Resolution(format!(
                                        "field `{}` holds a {kind}, which cannot be read as its type",
                                        target.name()
                                    )))
                                }
                                None => return Err(DecodeError::Avro("union branch index out of range")),
                            }
                        }
                    };
                    match target {
                        Target::Source => source = Some(Cow::Borrowed(reader.string()?)),
                        Target::Timestamp => timestamp = Some(reader.integral(read)?),
                        Target::Value => value = Some(reader.number(read)?),
                    }
                }
                EventView {
                    source: match (source, &defaults.source) {
                        (Some(source), _) => source,
                        (None, Some(default)) => Cow::Owned(default.clone()),
                        (None, None) => return Err(DecodeError::Avro("no source")),
                    },
                    timestamp: timestamp
                        .or(defaults.timestamp)
                        .ok_or(DecodeError::Avro("no timestamp"))?,
                    value: value
                        .or(defaults.value)
                        .ok_or(DecodeError::Avro("no value"))?,
                }
            }
        };
        if !reader.rest.is_empty() {
            return Err(DecodeError::Avro("trailing bytes after the record"));
        }
        Ok(event)
    }
}

/// `work`, with a panic inside apache-avro (e.g. its canonical form of a `fixed` of size 2^63
/// unwraps an overflow) turned into a refusal: the schema is outside data.
fn guarded<T>(work: impl FnOnce() -> Result<T, PlanError>) -> Result<T, PlanError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).unwrap_or_else(|_| {
        Err(PlanError::Invalid(
            "apache-avro cannot handle this schema (it panicked; e.g. a fixed size near 2^63)"
                .into(),
        ))
    })
}

/// Whether every field of `writer` (whose canonical form is the reader's) is of the type the
/// direct decoder reads. The canonical form drops `logicalType`, so a `timestamp` of
/// `timestamp-micros` (or `-nanos`, `time-*`) has the reader's canonical form but must not be
/// read as milliseconds: such a writer goes through the plan, which refuses it naming the field.
fn reads_directly(writer: &Schema) -> bool {
    let Schema::Record(record) = writer else {
        return false;
    };
    record.fields.iter().all(|field| {
        let Some(target) = Target::of(&field.name) else {
            return false;
        };
        let direct = match target {
            Target::Source => Read::String,
            Target::Timestamp => Read::Long,
            Target::Value => Read::Double,
        };
        read_of(target, &field.schema) == Ok(direct)
    })
}

/// `schema`, or the named schema it refers to.
fn follow<'s>(schema: &'s Schema, names: &NamesRef<'s>) -> Result<&'s Schema, PlanError> {
    match schema {
        Schema::Ref { name } => names
            .get(name)
            .copied()
            .ok_or_else(|| PlanError::Invalid(format!("unknown type {}", full(name)))),
        other => Ok(other),
    }
}

fn full(name: &Name) -> String {
    name.fullname(None)
}

/// How a writer value of `schema` is read as `target`, if it can be.
fn read_of(target: Target, schema: &Schema) -> Result<Read, &'static str> {
    use Schema as S;
    match (target, schema) {
        (Target::Source, S::String | S::Bytes | S::Uuid(UuidSchema::String)) => Ok(Read::String),
        (Target::Timestamp, S::Int) => Ok(Read::Int),
        (Target::Timestamp, S::Long | S::TimestampMillis | S::LocalTimestampMillis) => {
            Ok(Read::Long)
        }
        (Target::Timestamp, S::TimestampMicros | S::LocalTimestampMicros) => {
            Err("timestamp-micros (the field is epoch milliseconds)")
        }
        (Target::Timestamp, S::TimestampNanos | S::LocalTimestampNanos) => {
            Err("timestamp-nanos (the field is epoch milliseconds)")
        }
        (Target::Value, S::Int) => Ok(Read::Int),
        (Target::Value, S::Long) => Ok(Read::Long),
        (Target::Value, S::Float) => Ok(Read::Float),
        (Target::Value, S::Double) => Ok(Read::Double),
        (_, S::Null) => Err("null"),
        (_, S::Boolean) => Err("boolean"),
        (_, S::String | S::Bytes) => Err("string or bytes"),
        (_, S::Record(_)) => Err("record"),
        (_, S::Array(_)) => Err("array"),
        (_, S::Map(_)) => Err("map"),
        (_, S::Enum(_)) => Err("enum"),
        (_, S::Fixed(_) | S::Duration(_)) => Err("fixed"),
        (_, S::Union(_)) => Err("nested union"),
        _ => Err("logical type that does not promote"),
    }
}

fn read_step(
    target: Target,
    field: &str,
    schema: &Schema,
    names: &NamesRef<'_>,
) -> Result<Step, PlanError> {
    let expected = match target {
        Target::Source => "string",
        Target::Timestamp => "long (epoch milliseconds)",
        Target::Value => "double",
    };
    let refuse = |kind: &str| {
        let alias = if field == target.name() {
            String::new()
        } else {
            format!(" (`{field}` in the writer)")
        };
        field_error(
            target.name(),
            format!("the writer's type {kind}{alias} cannot be read as {expected}"),
        )
    };
    match follow(schema, names)? {
        Schema::Union(union) => {
            let branches: Vec<Branch> = union
                .variants()
                .iter()
                .map(|variant| match follow(variant, names) {
                    Ok(Schema::Null) => Branch::Null,
                    Ok(variant) => {
                        read_of(target, variant).map_or_else(Branch::Other, Branch::Read)
                    }
                    Err(_) => Branch::Other("unknown type"),
                })
                .collect();
            if !branches.iter().any(|b| matches!(b, Branch::Read(_))) {
                return Err(refuse("union with no branch of a readable type"));
            }
            Ok(Step::ReadUnion(target, branches))
        }
        other => read_of(target, other)
            .map(|read| Step::Read(target, read))
            .map_err(refuse),
    }
}

fn skip_of(
    schema: &Schema,
    names: &NamesRef<'_>,
    depth: usize,
    budget: &mut usize,
) -> Result<Skip, PlanError> {
    *budget = budget.checked_sub(1).ok_or_else(|| {
        PlanError::Invalid(format!(
            "the writer-only fields are too large to plan (over {MAX_SKIP_NODES} nested values)"
        ))
    })?;
    if depth > MAX_SKIP_DEPTH {
        return Err(PlanError::Invalid(
            "a writer-only field nests named types too deep (recursive?)".into(),
        ));
    }
    use Schema as S;
    Ok(match schema {
        S::Null => Skip::Nothing,
        S::Boolean => Skip::Boolean,
        S::Int | S::Long | S::Date | S::TimeMillis | S::TimeMicros => Skip::Varint,
        S::Enum(enumeration) => Skip::Enum(enumeration.symbols.len()),
        S::TimestampMillis | S::TimestampMicros | S::TimestampNanos => Skip::Varint,
        S::LocalTimestampMillis | S::LocalTimestampMicros | S::LocalTimestampNanos => Skip::Varint,
        S::Float => Skip::Fixed(4),
        S::Double => Skip::Fixed(8),
        S::Bytes | S::BigDecimal | S::Uuid(UuidSchema::Bytes) => Skip::LengthPrefixed,
        S::String | S::Uuid(UuidSchema::String) => Skip::Utf8,
        S::Uuid(UuidSchema::Fixed(fixed)) | S::Fixed(fixed) | S::Duration(fixed) => {
            Skip::Fixed(fixed.size)
        }
        S::Decimal(decimal) => match &decimal.inner {
            apache_avro::schema::InnerDecimalSchema::Bytes => Skip::LengthPrefixed,
            apache_avro::schema::InnerDecimalSchema::Fixed(fixed) => Skip::Fixed(fixed.size),
        },
        S::Array(array) => Skip::Array(Box::new(skip_of(&array.items, names, depth + 1, budget)?)),
        S::Map(map) => Skip::Map(Box::new(skip_of(&map.types, names, depth + 1, budget)?)),
        S::Union(union) => Skip::Union(
            union
                .variants()
                .iter()
                .map(|v| skip_of(v, names, depth + 1, budget))
                .collect::<Result<_, _>>()?,
        ),
        S::Record(record) => Skip::Record(
            record
                .fields
                .iter()
                .map(|f| skip_of(&f.schema, names, depth + 1, budget))
                .collect::<Result<_, _>>()?,
        ),
        S::Ref { .. } => skip_of(follow(schema, names)?, names, depth + 1, budget)?,
    })
}

mod reader;

#[cfg(test)]
mod tests;
