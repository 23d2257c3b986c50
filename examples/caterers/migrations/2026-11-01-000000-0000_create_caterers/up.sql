CREATE TABLE caterers (
    id serial PRIMARY KEY,
    name character varying NOT NULL,
    email character varying NOT NULL,
    phone character varying NOT NULL,
    street1 character varying NOT NULL,
    street2 character varying,
    city character varying NOT NULL,
    zip character varying NOT NULL,
    state character varying NOT NULL,
    created_at timestamp without time zone NOT NULL DEFAULT now(),
    updated_at timestamp without time zone NOT NULL DEFAULT now()
);
