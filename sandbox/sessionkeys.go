package sandbox

// SessionKey returns the latest session_key the simulator issued at login to
// user name of app (minigate id), or "" when it issued none. Tests use it to
// check that minigate never reveals the key and to encrypt user data the way
// the mini-program client does.
func (s *Sandbox) SessionKey(app, name string) string {
	st := s.wechat
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.sessionKeys[wechatKey(app, name)]
}
