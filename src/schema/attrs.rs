//! Typed attribute maps: one Arrow map column per OTLP value type.
//!
//! An attribute list becomes five maps that SQL and TraceQL query (`{prefix}_str`, `_int`,
//! `_float`, `_bool`, `_json`) plus one for bytes (`{prefix}_bytes`, Map<Utf8, Binary>). Arrays
//! and key-value lists are JSON text in `_json`; bytes get their own map so that they come
//! back as bytes and `_json` never needs a reserved shape to tell them apart. A bytes value
//! nested inside an array or key-value list is JSON text like any string: lowercase hex.
//!
//! The bytes map came with schema version 2 and is nullable, so that blocks written before it
//! still read; a null map reads as no attributes.

use std::sync::{Arc, LazyLock};

use arrow::array::{
    Array, ArrayBuilder, ArrayRef, BinaryBuilder, BooleanBuilder, Float64Builder, Int64Builder,
    MapBuilder, MapFieldNames, StringBuilder,
};
use arrow::datatypes::{DataType, Field};

use super::AttrValue;

/// Column-name suffixes of the queryable typed maps, in column order.
pub const SUFFIXES: [&str; 5] = [STR, INT, FLOAT, BOOL, JSON];
pub const STR: &str = "str";
pub const INT: &str = "int";
pub const FLOAT: &str = "float";
pub const BOOL: &str = "bool";
/// Arrays and key-value lists, as JSON text.
pub const JSON: &str = "json";
/// Bytes values, as binary. Not in [`SUFFIXES`]: its column sits apart from the other five.
pub const BYTES: &str = "bytes";

/// The name of one typed map column, e.g. `span_attrs` + [`INT`] = `span_attrs_int`.
pub fn column_name(prefix: &str, suffix: &str) -> String {
    format!("{prefix}_{suffix}")
}

fn names() -> MapFieldNames {
    MapFieldNames {
        entry: "entries".into(),
        key: "key".into(),
        value: "value".into(),
    }
}

fn map_type<V: ArrayBuilder>(values: V) -> DataType {
    let mut builder = MapBuilder::new(Some(names()), StringBuilder::new(), values);
    builder.finish().data_type().clone()
}

static MAP_TYPES: LazyLock<[DataType; 5]> = LazyLock::new(|| {
    [
        map_type(StringBuilder::new()),
        map_type(Int64Builder::new()),
        map_type(Float64Builder::new()),
        map_type(BooleanBuilder::new()),
        map_type(StringBuilder::new()),
    ]
});

static BYTES_TYPE: LazyLock<DataType> = LazyLock::new(|| map_type(BinaryBuilder::new()));

/// The five queryable map fields for a column prefix such as `span_attrs`.
pub fn fields(prefix: &str, nullable: bool) -> Vec<Field> {
    SUFFIXES
        .iter()
        .zip(MAP_TYPES.iter())
        .map(|(suffix, ty)| Field::new(column_name(prefix, suffix), ty.clone(), nullable))
        .collect()
}

/// The bytes map field for a column prefix; nullable, see the module doc.
pub fn bytes_field(prefix: &str) -> Field {
    Field::new(column_name(prefix, BYTES), BYTES_TYPE.clone(), true)
}

/// The columns a [`TypedAttrsBuilder`] built.
pub struct TypedAttrColumns {
    /// The five queryable maps, in [`SUFFIXES`] order.
    pub maps: Vec<ArrayRef>,
    /// The [`BYTES`] map.
    pub bytes: ArrayRef,
}

/// Builds the typed map columns, one row per attribute list.
pub struct TypedAttrsBuilder {
    str: MapBuilder<StringBuilder, StringBuilder>,
    int: MapBuilder<StringBuilder, Int64Builder>,
    float: MapBuilder<StringBuilder, Float64Builder>,
    bool: MapBuilder<StringBuilder, BooleanBuilder>,
    json: MapBuilder<StringBuilder, StringBuilder>,
    bytes: MapBuilder<StringBuilder, BinaryBuilder>,
}

impl Default for TypedAttrsBuilder {
    fn default() -> Self {
        Self {
            str: MapBuilder::new(Some(names()), StringBuilder::new(), StringBuilder::new()),
            int: MapBuilder::new(Some(names()), StringBuilder::new(), Int64Builder::new()),
            float: MapBuilder::new(Some(names()), StringBuilder::new(), Float64Builder::new()),
            bool: MapBuilder::new(Some(names()), StringBuilder::new(), BooleanBuilder::new()),
            json: MapBuilder::new(Some(names()), StringBuilder::new(), StringBuilder::new()),
            bytes: MapBuilder::new(Some(names()), StringBuilder::new(), BinaryBuilder::new()),
        }
    }
}

impl TypedAttrsBuilder {
    /// Appends one row: every attribute goes to the map of its type.
    pub fn append(&mut self, attrs: &[(String, AttrValue)]) {
        for (key, value) in attrs {
            match value {
                AttrValue::Str(v) => {
                    self.str.keys().append_value(key);
                    self.str.values().append_value(v);
                }
                AttrValue::Int(v) => {
                    self.int.keys().append_value(key);
                    self.int.values().append_value(*v);
                }
                AttrValue::Float(v) => {
                    self.float.keys().append_value(key);
                    self.float.values().append_value(*v);
                }
                AttrValue::Bool(v) => {
                    self.bool.keys().append_value(key);
                    self.bool.values().append_value(*v);
                }
                AttrValue::Json(v) => {
                    self.json.keys().append_value(key);
                    self.json.values().append_value(v);
                }
                AttrValue::Bytes(v) => {
                    self.bytes.keys().append_value(key);
                    self.bytes.values().append_value(v);
                }
            }
        }
        // Appending to a MapBuilder only fails when keys and values disagree in length,
        // which the paired appends above rule out.
        for result in [
            self.str.append(true),
            self.int.append(true),
            self.float.append(true),
            self.bool.append(true),
            self.json.append(true),
            self.bytes.append(true),
        ] {
            debug_assert!(result.is_ok());
        }
    }

    /// The built columns.
    pub fn finish(mut self) -> TypedAttrColumns {
        TypedAttrColumns {
            maps: vec![
                Arc::new(self.str.finish()),
                Arc::new(self.int.finish()),
                Arc::new(self.float.finish()),
                Arc::new(self.bool.finish()),
                Arc::new(self.json.finish()),
            ],
            bytes: Arc::new(self.bytes.finish()),
        }
    }
}
