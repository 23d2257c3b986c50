CREATE TABLE cars (
    id serial PRIMARY KEY,
    make text NOT NULL,
    model text NOT NULL,
    year integer NOT NULL,
    mileage integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE trips (
    id bigserial PRIMARY KEY,
    car_id integer NOT NULL REFERENCES cars,
    km integer NOT NULL
);

CREATE INDEX trips_car_id_idx ON trips (car_id);
