//! Typed attribute maps: one Arrow map column per OTLP value type.

use std::sync::{Arc, LazyLock};

use arrow::array::{
    Array, ArrayBuilder, ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, MapBuilder,
    MapFieldNames, StringBuilder,
};
use arrow::datatypes::{DataType, Field};

use super::AttrValue;

/// Column-name suffixes of the typed maps, in column order.
pub const SUFFIXES: [&str; 5] = [STR, INT, FLOAT, BOOL, JSON];
pub const STR: &str = "str";
pub const INT: &str = "int";
pub const FLOAT: &str = "float";
pub const BOOL: &str = "bool";
/// Arrays, key-value lists and bytes, as JSON text.
pub const JSON: &str = "json";

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

/// The five map fields for a column prefix such as `span_attrs`.
pub fn fields(prefix: &str) -> Vec<Field> {
    SUFFIXES
        .iter()
        .zip(MAP_TYPES.iter())
        .map(|(suffix, ty)| Field::new(column_name(prefix, suffix), ty.clone(), false))
        .collect()
}

/// Builds the five typed map columns, one row per attribute list.
pub struct TypedAttrsBuilder {
    str: MapBuilder<StringBuilder, StringBuilder>,
    int: MapBuilder<StringBuilder, Int64Builder>,
    float: MapBuilder<StringBuilder, Float64Builder>,
    bool: MapBuilder<StringBuilder, BooleanBuilder>,
    json: MapBuilder<StringBuilder, StringBuilder>,
}

impl Default for TypedAttrsBuilder {
    fn default() -> Self {
        Self {
            str: MapBuilder::new(Some(names()), StringBuilder::new(), StringBuilder::new()),
            int: MapBuilder::new(Some(names()), StringBuilder::new(), Int64Builder::new()),
            float: MapBuilder::new(Some(names()), StringBuilder::new(), Float64Builder::new()),
            bool: MapBuilder::new(Some(names()), StringBuilder::new(), BooleanBuilder::new()),
            json: MapBuilder::new(Some(names()), StringBuilder::new(), StringBuilder::new()),
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
        ] {
            debug_assert!(result.is_ok());
        }
    }

    /// The five columns, in [`SUFFIXES`] order.
    pub fn finish(mut self) -> Vec<ArrayRef> {
        vec![
            Arc::new(self.str.finish()),
            Arc::new(self.int.finish()),
            Arc::new(self.float.finish()),
            Arc::new(self.bool.finish()),
            Arc::new(self.json.finish()),
        ]
    }
}
