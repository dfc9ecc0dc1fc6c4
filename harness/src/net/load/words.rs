//! Sentences of a known token length for text protocols: common words that are one token
//! each in BERT-style vocabularies (all 144 checked against MiniLM's).

use rand::{Rng, SeedableRng};

/// Common words that are one token each in BERT-style vocabularies: sentences of a known
/// token length.
const WORDS: &[&str] = &[
    "the", "of", "and", "to", "in", "is", "was", "he", "for", "it", "with", "as", "his", "on",
    "be", "at", "by", "had", "are", "but", "from", "or", "have", "an", "they", "which", "one",
    "you", "were", "her", "all", "she", "there", "would", "their", "we", "him", "been", "has",
    "when", "who", "will", "more", "no", "if", "out", "so", "said", "what", "up", "its", "about",
    "into", "than", "them", "can", "only", "other", "new", "some", "could", "time", "these", "two",
    "may", "then", "do", "first", "any", "my", "now", "such", "like", "our", "over", "man", "me",
    "even", "most", "made", "after", "also", "did", "many", "before", "must", "through", "back",
    "years", "where", "much", "your", "way", "well", "down", "should", "because", "each", "just",
    "those", "people", "how", "too", "little", "state", "good", "very", "make", "world", "still",
    "own", "see", "men", "work", "long", "get", "here", "between", "both", "life", "being",
    "under", "never", "day", "same", "another", "know", "while", "last", "might", "us", "great",
    "old", "year", "off", "come", "since", "against", "go", "came", "right", "used", "take",
    "three",
];

/// The generator of one scenario's text: the same seed, batch and length give the same words.
pub fn scenario_rng(seed: u64, batch: usize, seq: usize) -> rand_chacha::ChaCha8Rng {
    rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ (batch as u64) << 32 ^ seq as u64)
}

pub fn sentence(words: usize, rng: &mut rand_chacha::ChaCha8Rng) -> String {
    (0..words)
        .map(|_| WORDS[rng.random_range(0..WORDS.len())])
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_have_the_asked_word_count_and_are_seeded() {
        let mut a = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut b = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let s = sentence(16, &mut a);
        assert_eq!(s.split(' ').count(), 16);
        assert_eq!(s, sentence(16, &mut b));
    }
}
