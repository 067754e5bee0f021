package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/riverqueue/river"
	mpconfig "github.com/silenceper/wechat/v2/miniprogram/config"
	mpcontext "github.com/silenceper/wechat/v2/miniprogram/context"
	"github.com/silenceper/wechat/v2/miniprogram/message"
	"github.com/silenceper/wechat/v2/util"
	vegeta "github.com/tsenart/vegeta/v12/lib"

	customerservice "github.com/minigate/minigate/customer-service"
	"github.com/minigate/minigate/events"
	"github.com/minigate/minigate/internal/ids"
	"github.com/minigate/minigate/webhooks"
)

// pushUsers is how many simulated users the pushes come from: enough that
// concurrent pushes rarely update the same conversation row.
const pushUsers = 1000

// pushGen builds WeChat message pushes in safe mode, XML, as the platform
// sends them: a text message with a MsgId unique within the run, encrypted
// with the app's EncodingAESKey and signed with its token (signature and
// msg_signature), using silenceper's implementation of the protocol.
type pushGen struct {
	// app is minigate's app id (the route's {app}).
	app                              string
	appID, token, aesKey, originalID string
	openIDs                          []string
	msgIDBase                        int64
	seq                              atomic.Int64
}

func newPushGen(a *benchApp, openIDs []string) *pushGen {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return &pushGen{
		app: a.cfg.ID, appID: a.cfg.AppID, token: a.cfg.Messages.Token, aesKey: a.cfg.Messages.EncodingAESKey,
		originalID: a.sb.OriginalID, openIDs: openIDs,
		// MsgIds unique across runs on the same database, too.
		msgIDBase: time.Now().Unix()<<24 | int64(binary.BigEndian.Uint32(b[:])&0xffffff),
	}
}

// make returns n new pushes addressed to base (a server's origin), each
// with a new MsgId, signed now.
func (g *pushGen) make(base string, n int) ([]vegeta.Target, error) {
	out := make([]vegeta.Target, n)
	hdr := http.Header{"Content-Type": {"text/xml"}}
	for i := range out {
		k := g.seq.Add(1)
		openID := g.openIDs[int(k)%len(g.openIDs)]
		now := time.Now()
		plain := fmt.Sprintf("<xml><ToUserName><![CDATA[%s]]></ToUserName><FromUserName><![CDATA[%s]]></FromUserName>"+
			"<CreateTime>%d</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[%s]]></Content><MsgId>%d</MsgId></xml>",
			g.originalID, openID, now.Unix(), pushContent(k), g.msgIDBase+k)
		var random [16]byte
		if _, err := rand.Read(random[:]); err != nil {
			return nil, err
		}
		enc, err := util.EncryptMsg(random[:], []byte(plain), g.appID, g.aesKey)
		if err != nil {
			return nil, fmt.Errorf("bench: encrypt push: %w", err)
		}
		ts, nonce := strconv.FormatInt(now.Unix(), 10), strconv.FormatInt(k%1_000_000_000+1_000_000_000, 10)
		q := url.Values{}
		q.Set("signature", util.Signature(g.token, ts, nonce))
		q.Set("timestamp", ts)
		q.Set("nonce", nonce)
		q.Set("openid", openID)
		q.Set("encrypt_type", "aes")
		q.Set("msg_signature", util.Signature(g.token, ts, nonce, string(enc)))
		body := "<xml><ToUserName><![CDATA[" + g.originalID + "]]></ToUserName><Encrypt><![CDATA[" + string(enc) + "]]></Encrypt></xml>"
		out[i] = vegeta.Target{
			Method: http.MethodPost, URL: base + "/callbacks/" + g.app + "/messages?" + q.Encode(),
			Body: []byte(body), Header: hdr,
		}
	}
	return out, nil
}

// pushContent is a short user message, different for each push.
func pushContent(k int64) string {
	return "你好，我想问一下订单 #" + strconv.FormatInt(k, 10) + " 什么时候发货？"
}

// isSuccessAck is the WeChat message-push ack check: 200 "success".
func isSuccessAck(r *vegeta.Result) bool {
	return r.Code == http.StatusOK && string(r.Body) == "success"
}

// Environment variables that hand the peer its credentials (kept out of
// the process list).
const (
	envPeerAppID  = "BENCH_PEER_APPID"
	envPeerToken  = "BENCH_PEER_TOKEN"
	envPeerAESKey = "BENCH_PEER_AESKEY"
)

// peerPushHandler is what teams write by hand: silenceper's PushReceiver on
// plain net/http, verifying the signature, decrypting and parsing each
// push, then answering "success"; nothing is stored.
func peerPushHandler(appID, token, aesKey string) http.Handler {
	recv := message.NewPushReceiver(&mpcontext.Context{Config: &mpconfig.Config{AppID: appID, Token: token, EncodingAESKey: aesKey}})
	mux := http.NewServeMux()
	mux.HandleFunc("POST /callbacks/{app}/messages", func(w http.ResponseWriter, r *http.Request) {
		if _, _, _, err := recv.GetMsgData(r); err != nil {
			http.Error(w, "invalid push", http.StatusBadRequest)
			return
		}
		_, _ = io.WriteString(w, "success")
	})
	return mux
}

// runPeer serves peerPushHandler on addr until the process is killed
// (`bench peer-push ADDR`, started by the bench itself).
func runPeer(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{
		ReadHeaderTimeout: 5 * time.Second,
		Handler:           peerPushHandler(os.Getenv(envPeerAppID), os.Getenv(envPeerToken), os.Getenv(envPeerAESKey)),
	}
	return srv.Serve(ln)
}

// pushCeiling runs one message push's statements directly, in one
// transaction, as the pipeline and the inbox do for a new push: store the
// callback, the inbox message and its conversation, record
// message.received and insert its delivery job.
type pushCeiling struct {
	app     string
	db      *sqlx.DB
	river   *river.Client[*sql.Tx]
	openIDs []string
	msgBase int64
}

func (c *pushCeiling) op(ctx context.Context, n int64) error {
	now := time.Now().UTC().Truncate(time.Microsecond)
	openID := c.openIDs[int(n)%len(c.openIDs)]
	msg := &webhooks.Message{
		ToUserName: "gh_bench", FromUserName: openID, CreateTime: now.Unix(), MsgType: "text",
		MsgID: c.msgBase + n, Content: pushContent(n),
	}
	msg.Fields = map[string]any{
		"ToUserName": msg.ToUserName, "FromUserName": msg.FromUserName, "CreateTime": msg.CreateTime,
		"MsgType": msg.MsgType, "Content": msg.Content, "MsgId": msg.MsgID,
	}
	opened := webhooks.OpenedMessage(msg)
	summary, _ := json.Marshal(opened.Summary) // maps of strings and numbers always encode
	payload, _ := json.Marshal(opened.Stored)
	tx, err := c.db.BeginTxx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback() //nolint:errcheck // no-op after commit
	var cbID int64
	if err := tx.QueryRowContext(ctx, webhooks.CallbackInsertIfNew, c.app, string(webhooks.KindMessages),
		opened.DedupKey, opened.EventType, string(summary), string(payload), now).Scan(&cbID); err != nil {
		return fmt.Errorf("callback: %w", err)
	}
	m := customerservice.Message{
		ID: ids.New("msg"), App: c.app, OpenID: openID, Direction: customerservice.DirectionIn, Type: "text",
		Content: msg.Content, PlatformMsgID: strconv.FormatInt(msg.MsgID, 10),
		CreatedAt: time.Unix(msg.CreateTime, 0).UTC(), ReceivedAt: now,
	}
	if _, err := tx.ExecContext(ctx, customerservice.MessageInsertInbound,
		m.ID, m.App, m.OpenID, m.Type, "", m.Content, "", "", "", "", "", "", "", "", nil, m.PlatformMsgID, cbID,
		m.CreatedAt, m.ReceivedAt); err != nil {
		return fmt.Errorf("message: %w", err)
	}
	preview, dir := m.Content, customerservice.DirectionIn
	if _, err := tx.ExecContext(ctx, customerservice.ConversationTouchInbound,
		m.App, m.OpenID, &m.ID, &m.Type, &preview, &dir, &m.CreatedAt, &m.CreatedAt, nil, 1, m.CreatedAt, m.ReceivedAt); err != nil {
		return fmt.Errorf("conversation: %w", err)
	}
	data, _ := json.Marshal(customerservice.ReceivedData{App: m.App, OpenID: m.OpenID, Message: m})
	if err := publishDirect(ctx, tx, c.river, events.TypeMessageReceived, data, now); err != nil {
		return err
	}
	return tx.Commit()
}

// publishDirect records an event and inserts its delivery job, as
// events.Service.Publish does with an events URL configured; with rc nil it
// records the event only, as Publish does without one.
func publishDirect(ctx context.Context, tx *sqlx.Tx, rc *river.Client[*sql.Tx], typ string, data []byte, now time.Time) error {
	id, state := ids.New("evt"), events.StatePending
	if rc == nil {
		state = events.StateNotConfigured
	}
	if _, err := tx.ExecContext(ctx, events.EventInsert, id, typ, string(data), state, now); err != nil {
		return fmt.Errorf("event: %w", err)
	}
	if rc == nil {
		return nil
	}
	if _, err := rc.InsertTx(ctx, tx.Tx, events.DeliverArgs{EventID: id}, &river.InsertOpts{MaxAttempts: events.DefaultBackoff.MaxAttempts}); err != nil {
		return fmt.Errorf("event job: %w", err)
	}
	return nil
}

// openIDsOf returns the openids of n simulated users of the bench app.
func openIDsOf(a *benchApp, sim *simulator, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = sim.sb.User(a.sb, "user-"+strconv.Itoa(i)).OpenID
	}
	return out
}

// startPeer runs the hand-written peer as a child process (this binary,
// `peer-push`), so that it has its own runtime as minigate does, and waits
// until it accepts connections.
func startPeer(a *benchApp) (*peerProcess, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	p := &peerProcess{url: "http://" + addr, done: make(chan error, 1)}
	p.cmd = exec.Command(self, "peer-push", addr)
	p.cmd.Env = append(os.Environ(), envPeerAppID+"="+a.cfg.AppID, envPeerToken+"="+a.cfg.Messages.Token,
		envPeerAESKey+"="+a.cfg.Messages.EncodingAESKey)
	p.cmd.Stderr = os.Stderr
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: start peer: %w", err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return p, nil
		}
		select {
		case err := <-p.done:
			return nil, fmt.Errorf("bench: peer exited: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	p.stop()
	return nil, fmt.Errorf("bench: peer not listening on %s", addr)
}

// peerProcess is the running peer.
type peerProcess struct {
	url  string
	cmd  *exec.Cmd
	done chan error
}

// stop ends the peer (it holds no state worth a graceful stop).
func (p *peerProcess) stop() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// isPeerAck is the peer's ack check.
func isPeerAck(r *vegeta.Result) bool {
	return r.Code == http.StatusOK && strings.TrimSpace(string(r.Body)) == "success"
}
