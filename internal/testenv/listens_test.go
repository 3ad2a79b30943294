package testenv

import (
	"net"
	"os"
	"testing"
)

// listensOn tells this process's listening socket from a port nobody holds.
func TestListensOn(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	owns, known := listensOn(os.Getpid(), port)
	if !known {
		t.Skip("SKIPPED: /proc cannot tell socket owners here")
	}
	if !owns {
		t.Fatal("this process's listener not recognised")
	}
	if owns, _ := listensOn(os.Getppid(), port); owns {
		t.Fatal("another process seen as the owner")
	}
	l.Close()
	if owns, known := listensOn(os.Getpid(), port); owns || !known {
		t.Fatalf("closed listener: owns=%v known=%v", owns, known)
	}
}
