//! What spanlake tells Flight SQL clients about itself: `GetSqlInfo` facts (name, version,
//! read-only, SQL grammar) and `GetXdbcTypeInfo` types, built once.

use arrow_flight::error::FlightError;
use arrow_flight::sql::metadata::{
    SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::{
    Nullable, Searchable, SqlInfo, SqlNullOrdering, SqlSupportedTransaction, XdbcDataType,
};

/// The server's `GetSqlInfo` answers.
pub fn sql_info() -> Result<SqlInfoData, FlightError> {
    let mut info = SqlInfoDataBuilder::new();
    info.append(SqlInfo::FlightSqlServerName, "spanlake");
    info.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    info.append(SqlInfo::FlightSqlServerArrowVersion, "59");
    info.append(SqlInfo::FlightSqlServerReadOnly, true);
    info.append(SqlInfo::FlightSqlServerSql, true);
    info.append(SqlInfo::FlightSqlServerSubstrait, false);
    info.append(
        SqlInfo::FlightSqlServerTransaction,
        SqlSupportedTransaction::None as i32,
    );
    info.append(SqlInfo::FlightSqlServerCancel, true);
    info.append(SqlInfo::SqlDdlCatalog, false);
    info.append(SqlInfo::SqlDdlSchema, false);
    info.append(SqlInfo::SqlDdlTable, false);
    info.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    info.append(
        SqlInfo::SqlNullOrdering,
        SqlNullOrdering::SqlNullsSortedHigh as i32,
    );
    info.append(SqlInfo::SqlTransactionsSupported, false);
    info.append(SqlInfo::SqlSelectForUpdateSupported, false);
    info.append(SqlInfo::SqlStoredProceduresSupported, false);
    info.append(SqlInfo::SqlMaxColumnsInTable, 0);
    info.append(SqlInfo::SqlSchemaTerm, "schema");
    info.append(SqlInfo::SqlCatalogTerm, "catalog");
    info.append(SqlInfo::SqlCatalogAtStart, true);
    info.append(
        SqlInfo::SqlKeywords,
        &["APPROX_PERCENTILE_CONT", "UNNEST", "EXPLAIN"][..],
    );
    info.append(
        SqlInfo::SqlStringFunctions,
        &[
            "lower",
            "upper",
            "substr",
            "concat",
            "regexp_like",
            "starts_with",
        ][..],
    );
    info.append(
        SqlInfo::SqlNumericFunctions,
        &["abs", "ceil", "floor", "round", "power", "sqrt", "ln"][..],
    );
    info.append(
        SqlInfo::SqlDatetimeFunctions,
        &["now", "date_bin", "date_trunc", "to_timestamp", "extract"][..],
    );
    info.build()
}

fn type_info(
    name: &str,
    data_type: XdbcDataType,
    column_size: Option<i32>,
    quoted: bool,
) -> XdbcTypeInfo {
    XdbcTypeInfo {
        type_name: name.to_string(),
        data_type,
        column_size,
        literal_prefix: quoted.then(|| "'".to_string()),
        literal_suffix: quoted.then(|| "'".to_string()),
        create_params: None,
        nullable: Nullable::NullabilityNullable,
        case_sensitive: quoted,
        searchable: Searchable::Full,
        unsigned_attribute: (!quoted).then_some(false),
        fixed_prec_scale: false,
        auto_increment: None,
        local_type_name: Some(name.to_string()),
        minimum_scale: None,
        maximum_scale: None,
        sql_data_type: data_type,
        datetime_subcode: None,
        num_prec_radix: (!quoted).then_some(10),
        interval_precision: None,
    }
}

/// The SQL types of spanlake's columns, as `GetXdbcTypeInfo` lists them.
pub fn xdbc_types() -> Result<XdbcTypeInfoData, FlightError> {
    let mut types = XdbcTypeInfoDataBuilder::new();
    for info in [
        type_info("BOOLEAN", XdbcDataType::XdbcBit, Some(1), false),
        type_info("INTEGER", XdbcDataType::XdbcInteger, Some(32), false),
        type_info("BIGINT", XdbcDataType::XdbcBigint, Some(64), false),
        type_info("DOUBLE", XdbcDataType::XdbcDouble, Some(53), false),
        type_info("VARCHAR", XdbcDataType::XdbcVarchar, None, true),
        type_info("BINARY", XdbcDataType::XdbcBinary, None, true),
        type_info("TIMESTAMP", XdbcDataType::XdbcTimestamp, None, true),
    ] {
        types.append(info);
    }
    types.build()
}
