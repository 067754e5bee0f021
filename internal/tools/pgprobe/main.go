// Command pgprobe is used by scripts/db.sh: it checks that a Postgres URL
// accepts connections and, with -create NAME, makes sure database NAME exists
// and prints its URL. It exits 1 when the server cannot be reached.
package main

import (
	"context"
	"database/sql"
	"flag"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"time"

	_ "github.com/lib/pq"
)

func main() {
	create := flag.String("create", "", "database to create if missing; its URL is printed")
	wait := flag.Duration("wait", 0, "keep trying this long")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: pgprobe [-create NAME] [-wait D] URL")
		os.Exit(2)
	}
	u := flag.Arg(0)
	deadline := time.Now().Add(*wait)
	for {
		err := probe(u, *create)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			fmt.Fprintln(os.Stderr, "pgprobe:", err)
			os.Exit(1)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

var safeName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

func probe(u, create string) error {
	db, err := sql.Open("postgres", u)
	if err != nil {
		return err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		return err
	}
	if create == "" {
		return nil
	}
	if !safeName.MatchString(create) {
		return fmt.Errorf("bad database name %q", create)
	}
	var exists bool
	if err := db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, create).Scan(&exists); err != nil {
		return err
	}
	if !exists {
		if _, err := db.ExecContext(ctx, `CREATE DATABASE `+create); err != nil {
			return err
		}
	}
	parsed, err := url.Parse(u)
	if err != nil {
		return err
	}
	parsed.Path = "/" + create
	fmt.Println(parsed.String())
	return nil
}
