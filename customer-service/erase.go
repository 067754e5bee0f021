package customerservice

import (
	"context"
	"fmt"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// ConversationKey names one user's conversation: an app and the user's openid
// there.
type ConversationKey struct {
	App, OpenID string
}

// Queries of the inbox erasure.
const (
	// MessageDeleteByConversations deletes both directions of the
	// conversations ($1 apps, $2 openids) and returns the media they name.
	MessageDeleteByConversations = `DELETE FROM messages m
	USING unnest($1::text[], $2::text[]) AS c (app, openid)
	WHERE m.app = c.app AND m.openid = c.openid
	RETURNING m.app, m.media_id, m.thumb_media_id`

	ConversationDeleteMany = `DELETE FROM conversations v
	USING unnest($1::text[], $2::text[]) AS c (app, openid)
	WHERE v.app = c.app AND v.openid = c.openid`

	// MediaDeleteMany deletes media ($1 apps, $2 media ids) with their bytes.
	MediaDeleteMany = `DELETE FROM media m
	USING unnest($1::text[], $2::text[]) AS d (app, media_id)
	WHERE m.app = d.app AND m.media_id = d.media_id`
)

// EraseConversations deletes the inbox of convs, in the erasure's
// transaction tx: the messages in both directions (their text), the
// conversation rows (their previews) and the media those messages carried
// (the pictures a user sent, and those sent to them).
func (s *Service) EraseConversations(ctx context.Context, tx *sqlx.Tx, convs []ConversationKey) error {
	if len(convs) == 0 {
		return nil
	}
	apps, openIDs := make([]string, len(convs)), make([]string, len(convs))
	for i, c := range convs {
		apps[i], openIDs[i] = c.App, c.OpenID
	}
	var media []struct {
		App          string `db:"app"`
		MediaID      string `db:"media_id"`
		ThumbMediaID string `db:"thumb_media_id"`
	}
	if err := sqlx.SelectContext(ctx, tx, &media, MessageDeleteByConversations, pq.Array(apps), pq.Array(openIDs)); err != nil {
		return fmt.Errorf("customerservice: erase messages: %w", err)
	}
	if _, err := tx.ExecContext(ctx, ConversationDeleteMany, pq.Array(apps), pq.Array(openIDs)); err != nil {
		return fmt.Errorf("customerservice: erase conversations: %w", err)
	}
	var mApps, mIDs []string
	for _, m := range media {
		for _, id := range []string{m.MediaID, m.ThumbMediaID} {
			if id != "" {
				mApps, mIDs = append(mApps, m.App), append(mIDs, id)
			}
		}
	}
	if len(mIDs) > 0 {
		if _, err := tx.ExecContext(ctx, MediaDeleteMany, pq.Array(mApps), pq.Array(mIDs)); err != nil {
			return fmt.Errorf("customerservice: erase media: %w", err)
		}
	}
	return nil
}
