package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Postgres is a private PostgreSQL server (Debian's postgresql package on
// the host): its own data folder in a temp dir, listening on loopback and on
// a socket in that folder, trust authentication, no durability (a test
// database). Stop removes everything.
type Postgres struct {
	Port int
	Dir  string

	bin  string
	cred *syscall.Credential
	proc *Proc
}

// postgresBin finds the newest installed server's bin folder.
func postgresBin() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[i])))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[j])))
		return vi > vj
	})
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", errors.New("PostgreSQL is not installed (apt-get install postgresql)")
}

// StartPostgres initialises and starts a server. PostgreSQL refuses to run
// as root, so as root it runs as the postgres account.
func StartPostgres(ctx context.Context) (*Postgres, error) {
	bin, err := postgresBin()
	if err != nil {
		return nil, err
	}
	p := &Postgres{bin: bin}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running PostgreSQL as root needs the postgres account: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		p.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	if p.Dir, err = os.MkdirTemp("", "mxprobe-pg-"); err != nil {
		return nil, err
	}
	if p.cred != nil {
		if err := os.Chown(p.Dir, int(p.cred.Uid), int(p.cred.Gid)); err != nil {
			p.Stop()
			return nil, err
		}
	}
	data := filepath.Join(p.Dir, "data")
	if out, err := p.command(ctx, "initdb", "-D", data, "-U", "postgres", "--auth=trust",
		"--encoding=UTF8", "--locale=C").CombinedOutput(); err != nil {
		p.Stop()
		return nil, fmt.Errorf("initdb: %v: %s", err, lastLines(string(out), 10))
	}
	for attempt := 1; ; attempt++ {
		if p.Port, err = FreePort(); err != nil {
			p.Stop()
			return nil, err
		}
		cmd := p.command(context.Background(), "postgres", "-D", data, "-p", strconv.Itoa(p.Port),
			"-h", "127.0.0.1", "-k", p.Dir,
			"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
			"-c", "max_connections=200")
		logf, err := os.OpenFile(filepath.Join(p.Dir, "postgres.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			p.Stop()
			return nil, err
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		p.proc, err = startProc(cmd, serviceWait)
		logf.Close()
		if err != nil {
			p.Stop()
			return nil, fmt.Errorf("starting postgres: %w", err)
		}
		err = p.waitReady(ctx)
		if err == nil {
			return p, nil
		}
		p.proc.Stop(syscall.SIGINT, 5*time.Second)
		p.proc = nil
		if attempt == 3 || !strings.Contains(p.log(), "could not bind") {
			p.Stop()
			return nil, err
		}
	}
}

func (p *Postgres) command(ctx context.Context, tool string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(p.bin, tool), args...)
	cmd.Dir = p.Dir
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LANG=C.UTF-8"}
	if p.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred}
	}
	return cmd
}

func (p *Postgres) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := p.command(ctx, "pg_isready", "-h", "127.0.0.1", "-p", strconv.Itoa(p.Port), "-U", "postgres").CombinedOutput()
		if err == nil {
			return nil
		}
		select {
		case <-p.proc.Done():
			return fmt.Errorf("postgres exited during start-up: %s", lastLines(p.log(), 10))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres not ready within 30s: %s %s", out, lastLines(p.log(), 10))
		}
	}
}

func (p *Postgres) log() string {
	b, _ := os.ReadFile(filepath.Join(p.Dir, "postgres.log"))
	return string(b)
}

// SQL runs statements with psql as the postgres user.
func (p *Postgres) SQL(ctx context.Context, db, sql string) (string, error) {
	out, err := p.command(ctx, "psql", "-h", "127.0.0.1", "-p", strconv.Itoa(p.Port), "-U", "postgres",
		"-d", db, "-v", "ON_ERROR_STOP=1", "-Atc", sql).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("psql: %v: %s", err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

// CreateDatabase makes a database as Synapse requires it: UTF8 with the C
// collation and ctype (synapse/storage/engines/postgres.py refuses others
// unless allow_unsafe_locale is set).
func (p *Postgres) CreateDatabase(ctx context.Context, name string) error {
	_, err := p.SQL(ctx, "postgres", fmt.Sprintf(
		`CREATE DATABASE %q ENCODING 'UTF8' LC_COLLATE='C' LC_CTYPE='C' TEMPLATE template0`, name))
	return err
}

// Stop ends the server and removes its folder.
func (p *Postgres) Stop() {
	if p.proc != nil {
		// SIGINT is PostgreSQL's fast shutdown.
		p.proc.Stop(syscall.SIGINT, 10*time.Second)
		p.proc = nil
	}
	if p.Dir != "" {
		_ = os.RemoveAll(p.Dir)
	}
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}
