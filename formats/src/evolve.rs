//! Schema evolution: whether a table's columns hold the columns of a new data schema, how
//! they grow when they do not, and the decoded arrays conformed to the table's types.
//!
//! The rules (docs/formats.md, "Schema evolution"):
//! - columns and nested fields are matched by name, never by position;
//! - a column or nested field the table lacks is added (nullable: earlier rows read null);
//! - a column the data lacks reads null (when the table's column is nullable);
//! - a narrower number goes into a wider column (int into long, float into double): tables
//!   whose columns come from a registry store every integer as long and every float as
//!   double ([`widest`]), so that the widenings Avro and Protobuf allow never need Delta's
//!   `typeWidening` feature, which readers without it cannot read;
//! - any other difference (a string where the table has a number, a record where it has a
//!   list) is a [`Clash`] naming the field: the records with that schema go to the dead-letter
//!   table and the table is left as it is.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, ListArray, StructArray, new_null_array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Fields};
use arrow::error::ArrowError;
use sluice_config::{ColumnType, FieldConfig, StructField};

/// A field whose type in the data the table's column cannot hold.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("field {field:?} is {data} in the data but {table} in the table")]
pub struct Clash {
    /// The field's path (`outer.inner`, `list[]` for a list's elements).
    pub field: String,
    /// Its type in the table.
    pub table: String,
    /// Its type in the data.
    pub data: String,
}

/// `t` with every integer type as long and every float type as double (nested types too).
pub fn widest(t: &ColumnType) -> ColumnType {
    match t {
        ColumnType::Integer | ColumnType::Short | ColumnType::Byte => ColumnType::Long,
        ColumnType::Float => ColumnType::Double,
        ColumnType::Struct(fields) => ColumnType::Struct(
            fields
                .iter()
                .map(|f| StructField {
                    name: f.name.clone(),
                    ty: widest(&f.ty),
                })
                .collect(),
        ),
        ColumnType::Array(e) => ColumnType::Array(Box::new(widest(e))),
        ColumnType::Map(k, v) => ColumnType::Map(Box::new(widest(k)), Box::new(widest(v))),
        other => other.clone(),
    }
}

/// Whether the table's type `table` holds values of `data` as it is (`Ok(None)`), must grow to
/// the returned type first (new nested fields), or cannot take them.
pub fn merge_type(
    path: &str,
    table: &ColumnType,
    data: &ColumnType,
) -> Result<Option<ColumnType>, Clash> {
    use ColumnType as C;
    let clash = || Clash {
        field: path.to_string(),
        table: table.to_string(),
        data: data.to_string(),
    };
    match (table, data) {
        _ if table == data => Ok(None),
        (C::Long, C::Integer | C::Short | C::Byte)
        | (C::Integer, C::Short | C::Byte)
        | (C::Short, C::Byte)
        | (C::Double, C::Float) => Ok(None),
        (C::Struct(have), C::Struct(want)) => {
            let mut fields = have.clone();
            let mut grew = false;
            for w in want {
                let inner = format!("{path}.{}", w.name);
                match fields.iter_mut().find(|f| f.name == w.name) {
                    Some(f) => {
                        if let Some(t) = merge_type(&inner, &f.ty, &w.ty)? {
                            f.ty = t;
                            grew = true;
                        }
                    }
                    None => {
                        fields.push(w.clone());
                        grew = true;
                    }
                }
            }
            Ok(grew.then_some(C::Struct(fields)))
        }
        (C::Array(have), C::Array(want)) => {
            Ok(merge_type(&format!("{path}[]"), have, want)?.map(|t| C::Array(Box::new(t))))
        }
        (C::Map(hk, hv), C::Map(wk, wv)) => {
            if merge_type(&format!("{path}.key"), hk, wk)?.is_some() {
                return Err(clash());
            }
            Ok(merge_type(&format!("{path}.value"), hv, wv)?
                .map(|v| C::Map(hk.clone(), Box::new(v))))
        }
        _ => Err(clash()),
    }
}

/// How the table's data columns change to hold a data schema's.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Growth {
    /// Existing columns whose type grows (new nested fields), with their new type.
    pub grown: Vec<FieldConfig>,
    /// Columns the table lacks, to add (nullable).
    pub added: Vec<FieldConfig>,
}

impl Growth {
    /// Whether the table holds the data as it is.
    pub fn is_empty(&self) -> bool {
        self.grown.is_empty() && self.added.is_empty()
    }

    /// The changed and added columns, as the table should have them.
    pub fn fields(&self) -> Vec<FieldConfig> {
        self.grown.iter().chain(&self.added).cloned().collect()
    }

    /// What changes, for a person: `adds a, b; grows c`.
    pub fn describe(&self) -> String {
        let names = |v: &[FieldConfig]| {
            v.iter()
                .map(|f| f.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match (self.added.is_empty(), self.grown.is_empty()) {
            (false, true) => format!("adds {}", names(&self.added)),
            (true, false) => format!("adds nested fields to {}", names(&self.grown)),
            _ => format!(
                "adds {}; adds nested fields to {}",
                names(&self.added),
                names(&self.grown)
            ),
        }
    }
}

/// How the table's data columns `table` must grow to hold `data`'s, or the first field they
/// cannot hold. A non-nullable table column the data lacks is a clash too (its rows would
/// have no value).
pub fn growth(table: &[FieldConfig], data: &[FieldConfig]) -> Result<Growth, Clash> {
    let mut out = Growth::default();
    for d in data {
        match table.iter().find(|t| t.name == d.name) {
            Some(t) => {
                if let Some(ty) = merge_type(&d.name, &t.ty, &d.ty)? {
                    out.grown.push(FieldConfig {
                        name: t.name.clone(),
                        ty,
                        nullable: t.nullable,
                        format: t.format,
                    });
                }
            }
            None => out.added.push(FieldConfig {
                name: d.name.clone(),
                ty: d.ty.clone(),
                nullable: true,
                format: d.format,
            }),
        }
    }
    if let Some(t) = table
        .iter()
        .find(|t| !t.nullable && !data.iter().any(|d| d.name == t.name))
    {
        return Err(Clash {
            field: t.name.clone(),
            table: format!("{} not null", t.ty),
            data: "missing".into(),
        });
    }
    Ok(out)
}

/// `array` as the table's type `to`: struct fields matched by name (a field the data lacks is
/// null), list elements conformed, other types cast (enum dictionaries to strings, narrower
/// numbers to wider ones, times of day to integers).
pub fn conform(array: &ArrayRef, to: &DataType) -> Result<ArrayRef, ArrowError> {
    if array.data_type() == to {
        return Ok(array.clone());
    }
    match (array.data_type(), to) {
        (DataType::Struct(_), DataType::Struct(fields)) => {
            let s = array
                .as_any()
                .downcast_ref::<StructArray>()
                .ok_or_else(|| ArrowError::CastError("not a struct array".into()))?;
            let columns = fields
                .iter()
                .map(|f| match s.column_by_name(f.name()) {
                    Some(c) => conform(c, f.data_type()),
                    None => Ok(new_null_array(f.data_type(), s.len())),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Arc::new(StructArray::try_new(
                fields.clone(),
                columns,
                s.nulls().cloned(),
            )?))
        }
        (DataType::List(_), DataType::List(field)) => {
            let l = array
                .as_any()
                .downcast_ref::<ListArray>()
                .ok_or_else(|| ArrowError::CastError("not a list array".into()))?;
            let values = conform(l.values(), field.data_type())?;
            Ok(Arc::new(ListArray::try_new(
                field.clone(),
                l.offsets().clone(),
                values,
                l.nulls().cloned(),
            )?))
        }
        (DataType::Time32(_), DataType::Int64) => cast(&cast(array, &DataType::Int32)?, to),
        _ => cast(array, to),
    }
}

/// The Arrow fields of `columns` (as [`crate::schema::arrow_type`] makes them).
pub fn arrow_fields(columns: &[FieldConfig]) -> Fields {
    columns
        .iter()
        .map(|f| Field::new(&f.name, crate::schema::arrow_type(&f.ty), f.is_nullable()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int32Array, StringArray};

    fn col(name: &str, ty: ColumnType, nullable: bool) -> FieldConfig {
        FieldConfig {
            name: name.into(),
            ty,
            nullable,
            format: None,
        }
    }

    fn strukt(fields: &[(&str, ColumnType)]) -> ColumnType {
        ColumnType::Struct(
            fields
                .iter()
                .map(|(n, t)| StructField {
                    name: (*n).into(),
                    ty: t.clone(),
                })
                .collect(),
        )
    }

    #[test]
    fn a_new_field_and_a_new_nested_field_grow_the_table() {
        let table = vec![
            col("id", ColumnType::Long, false),
            col("where", strukt(&[("city", ColumnType::String)]), true),
        ];
        let data = vec![
            col("id", ColumnType::Integer, false),
            col(
                "where",
                strukt(&[("city", ColumnType::String), ("zip", ColumnType::Long)]),
                true,
            ),
            col("note", ColumnType::String, false),
        ];
        let g = growth(&table, &data).unwrap();
        assert_eq!(g.added, vec![col("note", ColumnType::String, true)]);
        assert_eq!(
            g.grown,
            vec![col(
                "where",
                strukt(&[("city", ColumnType::String), ("zip", ColumnType::Long)]),
                true
            )]
        );
        assert_eq!(g.describe(), "adds note; adds nested fields to where");
    }

    #[test]
    fn a_narrower_number_fits_and_a_type_change_names_the_nested_field() {
        let table = vec![col(
            "where",
            strukt(&[("zip", ColumnType::Long), ("lat", ColumnType::Double)]),
            true,
        )];
        let narrower = vec![col(
            "where",
            strukt(&[("zip", ColumnType::Integer), ("lat", ColumnType::Float)]),
            true,
        )];
        assert!(growth(&table, &narrower).unwrap().is_empty());
        let changed = vec![col("where", strukt(&[("zip", ColumnType::String)]), true)];
        let err = growth(&table, &changed).unwrap_err();
        assert_eq!(err.field, "where.zip");
        assert_eq!(
            err.to_string(),
            "field \"where.zip\" is string in the data but long in the table"
        );
        let wider = vec![col("n", ColumnType::Long, true)];
        let err = growth(&[col("n", ColumnType::Integer, true)], &wider).unwrap_err();
        assert_eq!(err.field, "n");
    }

    #[test]
    fn a_required_column_the_data_lacks_is_a_clash_and_a_nullable_one_is_not() {
        let table = vec![
            col("a", ColumnType::Long, true),
            col("b", ColumnType::Long, false),
        ];
        assert!(growth(&table, &[col("b", ColumnType::Long, false)]).is_ok());
        let err = growth(&table, &[col("a", ColumnType::Long, true)]).unwrap_err();
        assert_eq!(err.field, "b");
    }

    #[test]
    fn widest_turns_every_integer_into_long_and_float_into_double() {
        let t = strukt(&[
            ("i", ColumnType::Integer),
            ("f", ColumnType::Float),
            ("l", ColumnType::Array(Box::new(ColumnType::Short))),
        ]);
        assert_eq!(
            widest(&t),
            strukt(&[
                ("i", ColumnType::Long),
                ("f", ColumnType::Double),
                ("l", ColumnType::Array(Box::new(ColumnType::Long))),
            ])
        );
    }

    #[test]
    fn conform_matches_struct_fields_by_name_and_fills_missing_ones_with_null() {
        let data: ArrayRef = Arc::new(StructArray::from(vec![
            (
                Arc::new(Field::new("b", DataType::Int32, true)),
                Arc::new(Int32Array::from(vec![1, 2])) as ArrayRef,
            ),
            (
                Arc::new(Field::new("a", DataType::Utf8, true)),
                Arc::new(StringArray::from(vec!["x", "y"])) as ArrayRef,
            ),
        ]));
        let to = DataType::Struct(Fields::from(vec![
            Field::new("a", DataType::Utf8, true),
            Field::new("b", DataType::Int64, true),
            Field::new("c", DataType::Utf8, true),
        ]));
        let out = conform(&data, &to).unwrap();
        let s = out.as_any().downcast_ref::<StructArray>().unwrap();
        let a = s.column(0).as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(a.value(1), "y");
        let b = s
            .column(1)
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .unwrap();
        assert_eq!(b.values(), &[1, 2]);
        assert_eq!(s.column(2).null_count(), 2);
    }
}
