package testenv

import (
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Proc is a started child process (a daemon under test, Prometheus, a
// homeserver) whose exit is awaited in the background.
type Proc struct {
	Cmd  *exec.Cmd
	done chan struct{}
	err  error // cmd.Wait's, set before done is closed
	once sync.Once
}

// StartProc starts cmd and waits for its exit in the background.
func StartProc(cmd *exec.Cmd) (*Proc, error) { return startProc(cmd, (*Proc).awaitExit) }

// startProc starts cmd and runs wait (which must call awaitExit) in the
// background: a waiter of its own lets goleak tell the goroutine apart
// (serviceWait, LeakOptions).
func startProc(cmd *exec.Cmd, wait func(*Proc)) (*Proc, error) {
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &Proc{Cmd: cmd, done: make(chan struct{})}
	go wait(p)
	return p, nil
}

func (p *Proc) awaitExit() {
	p.err = p.Cmd.Wait()
	close(p.done)
}

// serviceWait waits for a service's exit (a homeserver, a PostgreSQL). A
// package's shared homeserver outlives its tests, so LeakOptions ignores
// this waiter.
func serviceWait(p *Proc) { p.awaitExit() }

// Done is closed once the process has exited (and been waited for).
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err is how the process ended (cmd.Wait's error); valid once Done is
// closed.
func (p *Proc) Err() error {
	<-p.done
	return p.err
}

// Stop asks the process to end with sig (SIGTERM, os.Interrupt) and waits
// up to grace for it, then kills it; it returns once the process is gone.
// Later calls only wait.
func (p *Proc) Stop(sig os.Signal, grace time.Duration) {
	p.once.Do(func() {
		_ = p.Cmd.Process.Signal(sig)
		select {
		case <-p.done:
		case <-time.After(grace):
			_ = p.Cmd.Process.Kill()
		}
	})
	<-p.done
}

// StartForTest starts cmd for the rest of test t: its stderr (and stdout,
// unless the caller reads it) goes to the returned log, which the test's
// log shows if it failed; the process gets SIGTERM (then SIGKILL after
// 10 s) when the test ends. name labels the log.
func StartForTest(t testing.TB, name string, cmd *exec.Cmd) (*Proc, *SyncBuffer) {
	t.Helper()
	log := &SyncBuffer{}
	cmd.Stderr = log
	if cmd.Stdout == nil {
		cmd.Stdout = log
	}
	p, err := StartProc(cmd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Stop(syscall.SIGTERM, 10*time.Second)
		if t.Failed() {
			t.Logf("%s log:\n%s", name, log.String())
		}
	})
	return p, log
}
