//! A team on the `time` crate: at read_new the row struct takes the model's `time` types; at
//! write_new, with the fields gone from the model, `rust_types(...)` names them. The owner's
//! `table_name` is a path, so the new table is found beside it without an import.

mod schema {
    diesel::table! {
        events (id) {
            id -> Int8,
            name -> Text,
            day -> Date,
            starts -> Time,
            at -> Timestamptz,
            seen -> Nullable<Timestamp>,
            days -> Array<Nullable<Date>>,
        }
    }

    diesel::table! {
        event_times (event_id) {
            event_id -> Int8,
            day -> Date,
            starts -> Time,
            happens_at -> Timestamptz,
            seen -> Nullable<Timestamp>,
            days -> Array<Nullable<Date>>,
        }
    }

    diesel::allow_tables_to_appear_in_same_query!(events, event_times);
}

mod read_new {
    use diesel::prelude::*;
    use zmig_runtime::Zmig;

    #[derive(Queryable, Selectable, Zmig)]
    #[diesel(table_name = crate::schema::events)]
    #[zmig(
        extract(into = event_times, primary_key = event_id, columns(day, starts, at as happens_at, seen, days)),
        stage = "read_new"
    )]
    pub struct Event {
        pub id: i64,
        pub name: String,
        pub day: time::Date,
        pub starts: time::Time,
        pub at: time::OffsetDateTime,
        pub seen: Option<time::PrimitiveDateTime>,
        pub days: Vec<Option<time::Date>>,
    }
}

mod write_new {
    use diesel::prelude::*;
    use zmig_runtime::Zmig;

    #[derive(Queryable, Selectable, Zmig)]
    #[diesel(table_name = crate::schema::events)]
    #[zmig(
        extract(
            into = event_times,
            primary_key = event_id,
            columns(day, starts, at as happens_at, seen, days),
            rust_types(
                day = time::Date,
                starts = time::Time,
                happens_at = time::OffsetDateTime,
                seen = Option<time::PrimitiveDateTime>,
                days = Vec<Option<time::Date>>
            )
        ),
        stage = "write_new"
    )]
    pub struct Event {
        pub id: i64,
        pub name: String,
    }
}

fn main() {
    let day = time::Date::from_calendar_date(2024, time::Month::February, 29).unwrap();
    let at = time::OffsetDateTime::UNIX_EPOCH;
    // The same Rust types at both stages, so code written at read_new keeps compiling.
    let read = read_new::EventTime {
        event_id: 1,
        day,
        starts: time::Time::MIDNIGHT,
        happens_at: at,
        seen: None,
        days: vec![Some(day)],
    };
    let write = write_new::EventTime {
        event_id: read.event_id,
        day: read.day,
        starts: read.starts,
        happens_at: read.happens_at,
        seen: read.seen,
        days: read.days.clone(),
    };
    assert_eq!(write.days, vec![Some(day)]);
    let _: fn(
        &mut diesel::pg::PgConnection,
        i64,
    ) -> diesel::QueryResult<Option<read_new::EventTime>> = read_new::EventTime::find_for;
    let _: fn(
        &write_new::EventTime,
        &mut diesel::pg::PgConnection,
    ) -> diesel::QueryResult<write_new::EventTime> = write_new::EventTime::save;
}
