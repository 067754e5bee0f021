// Package sql embeds minigate's schema: numbered goose migrations, one file
// per step ("00001_sessions.sql", …), each with "-- +goose Up" and
// "-- +goose Down" sections. Queries live beside their domain package
// (sessions/store.go, orders/store.go, …); only the schema lives here.
package sql

import "embed"

// FS holds the migration files.
//
//go:embed *.sql
var FS embed.FS
