package synapsereplay

import (
	"bytes"
	"io"
	"net/http"
	"testing"

	"go.uber.org/goleak"
)

func TestReplayCycles(t *testing.T) {
	defer goleak.VerifyNone(t)
	s, err := Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c := &http.Client{Transport: &http.Transport{}}
	defer c.CloseIdleConnections()
	for i := 0; i < len(Sequence)+1; i++ {
		resp, err := c.Get(s.URL)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		want, err := Page(Sequence[i%len(Sequence)])
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("request %d: not page %s", i, Sequence[i%len(Sequence)])
		}
	}
}
