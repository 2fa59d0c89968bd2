"""Drives spanlake's Flight SQL port with clients spanlake did not write: the ADBC Flight SQL
driver (DB-API) and pyarrow.flight. Prints what each saw as one JSON object on stdout;
tests/it/flight_clients.rs checks it.

Usage: flight_clients.py grpc://HOST:PORT BEARER_TOKEN
"""

import json
import sys

import adbc_driver_flightsql
import adbc_driver_flightsql.dbapi as flightsql
import pyarrow.flight as flight


def adbc(uri, token):
    header = adbc_driver_flightsql.DatabaseOptions.AUTHORIZATION_HEADER.value
    with flightsql.connect(uri, db_kwargs={header: f"Bearer {token}"}) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) AS n FROM spans")
            spans = cur.fetch_arrow_table().column("n")[0].as_py()
            cur.execute(
                "SELECT count(*) AS n FROM spans WHERE service_name = $1",
                parameters=("frontend",),
            )
            frontend = cur.fetch_arrow_table().column("n")[0].as_py()
            cur.execute("SELECT service_name, count(*) AS n FROM spans GROUP BY 1 ORDER BY 1")
            services = cur.fetch_arrow_table().column("service_name").to_pylist()
        objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
        tables = sorted(
            table["table_name"]
            for catalog in objects
            for schema in catalog["catalog_db_schemas"] or []
            if schema["db_schema_name"] == "public"
            for table in schema["db_schema_tables"] or []
        )
        schema = conn.adbc_get_table_schema("spans", catalog_filter="spanlake", db_schema_filter="public")
    return {
        "spans": spans,
        "frontend": frontend,
        "services": services,
        "tables": tables,
        "span_columns": schema.names,
    }


def plain(uri, token):
    client = flight.FlightClient(uri)
    options = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {token}".encode())])
    count = client.do_get(flight.Ticket(b"SELECT count(*) AS n FROM spans"), options).read_all()
    ticket = json.dumps({"traceql": '{ resource.service.name = "frontend" }', "limit": 100})
    matched = client.do_get(flight.Ticket(ticket.encode()), options).read_all()
    flights = [info.descriptor.path[0].decode() for info in client.list_flights(options=options)]
    return {
        "spans": count.column("n")[0].as_py(),
        "traceql_services": sorted(set(matched.column("service_name").to_pylist())),
        "traceql_rows": matched.num_rows,
        "flights": flights,
    }


def main():
    uri, token = sys.argv[1], sys.argv[2]
    print(json.dumps({"adbc": adbc(uri, token), "pyarrow": plain(uri, token)}))


if __name__ == "__main__":
    main()
