package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/asof/asof/config"
	"github.com/asof/asof/server"
)

var errNotRunning = errors.New("the server is not running")

// client talks to a running server over its control socket.
type client struct {
	socket string
	http   *http.Client
}

func newClient(g *globals) (*client, error) {
	socket := os.Getenv("ASOF_CONTROL_SOCKET")
	if socket == "" {
		cfg, err := config.Load(g.configFile, nil)
		if err != nil {
			return nil, err
		}
		socket = cfg.Control.Socket
	}
	return &client{socket: socket, http: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}}}, nil
}

func (c *client) do(method, path string, body any) (*http.Response, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "http://asof"+path, r)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w (no answer on control socket %s): %w", errNotRunning, c.socket, errors.Unwrap(errors.Unwrap(err)))
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		var e server.APIError
		if json.NewDecoder(resp.Body).Decode(&e) == nil && e.Error != "" {
			return nil, errors.New(e.Error)
		}
		return nil, fmt.Errorf("the server answered %s", resp.Status)
	}
	return resp, nil
}

func (c *client) call(method, path string, body, out any) error {
	resp, err := c.do(method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(out)
}

// servedPath makes an admin argument a path inside the served tree: the
// leading slash is optional.
func servedPath(p string) string {
	if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	return p
}

// streamCall runs a long operation on the server, showing its progress,
// and decodes its report into out.
func streamCall(g *globals, cmd *cobra.Command, name, path string, body, out any) error {
	c, err := newClient(g)
	if err != nil {
		return err
	}
	resp, err := c.do("POST", path, body)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	defer resp.Body.Close()
	bar := newProgress(cmd.ErrOrStderr(), name)
	defer bar.done()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var l server.StreamLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return fmt.Errorf("%s: bad answer: %w", name, err)
		}
		switch {
		case l.Error != "":
			return fmt.Errorf("%s: %s", name, l.Error)
		case l.Report != nil:
			if err := json.Unmarshal(l.Report, out); err != nil {
				return fmt.Errorf("%s: bad report: %w", name, err)
			}
			return nil
		default:
			bar.show(l.Stage, l.Done, l.Total)
		}
	}
	return fmt.Errorf("%s: the server stopped answering: %v", name, sc.Err())
}
