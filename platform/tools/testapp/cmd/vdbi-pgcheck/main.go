// vdbi-pgcheck runs in the pods of the kubelet end-to-end tests (tests/kubelet_*.rs): it logs in
// to PostgreSQL with the credentials its environment holds and reports what it saw, as one JSON
// line appended to a file the test reads through a hostPath volume (and to stdout).
//
//	vdbi-pgcheck -out /out/result.jsonl [-then exit0|exit1|sleep]
//
// Environment: DB_USER, DB_PASSWORD (the credentials under test), PGHOST, PGPORT, PGDATABASE.
// The report never holds the password: only whether it still was a placeholder.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

type report struct {
	UnixMillis  int64  `json:"unixMillis"`
	Pid         int    `json:"pid"`
	User        string `json:"user"`
	Placeholder bool   `json:"placeholder"`
	LoggedIn    bool   `json:"loggedIn"`
	CurrentUser string `json:"currentUser,omitempty"`
	Error       string `json:"error,omitempty"`
}

func main() {
	out := flag.String("out", "", "file to append the JSON report to")
	then := flag.String("then", "exit0", "after reporting: exit0, exit1 or sleep (until SIGTERM)")
	flag.Parse()

	user, password := os.Getenv("DB_USER"), os.Getenv("DB_PASSWORD")
	r := report{Pid: os.Getpid(), User: user}
	r.Placeholder = strings.Contains(user, "__VDBI_PH_") || strings.Contains(password, "__VDBI_PH_")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	dsn := (&url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword(user, password),
		Host:     net.JoinHostPort(os.Getenv("PGHOST"), os.Getenv("PGPORT")),
		Path:     "/" + os.Getenv("PGDATABASE"),
		RawQuery: "sslmode=disable&connect_timeout=5",
	}).String()
	conn, err := pgx.Connect(ctx, dsn)
	if err == nil {
		err = conn.QueryRow(ctx, "SELECT current_user").Scan(&r.CurrentUser)
		_ = conn.Close(ctx)
	}
	cancel()
	r.LoggedIn = err == nil
	if err != nil {
		r.Error = err.Error()
		if password != "" {
			// pgx errors do not carry the password; make sure of it.
			r.Error = strings.ReplaceAll(r.Error, password, "***")
		}
	}
	r.UnixMillis = time.Now().UnixMilli()
	line, _ := json.Marshal(r)
	fmt.Println(string(line))
	if *out != "" {
		f, ferr := os.OpenFile(*out, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if ferr == nil {
			_, ferr = f.Write(append(line, '\n'))
			if cerr := f.Close(); ferr == nil {
				ferr = cerr
			}
		}
		if ferr != nil {
			fmt.Fprintln(os.Stderr, "writing the report:", ferr)
			os.Exit(2)
		}
	}
	switch *then {
	case "exit1":
		os.Exit(1)
	case "sleep":
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		<-sig
	}
}
