"""The whole sine_jax config schema, with the paper's defaults (Tan et al., WSDM 2021).

Every dataset config starts from `get_config()` and overrides a few fields. Any field can
be overridden on the command line, e.g.

  python -m sine_jax.main --config=configs/movielens.py --workdir=runs/ml1m \
      --config.data.path=data/ml-1m/ratings.dat \
      --config.model.num_interests=8

Symbols are the paper's: D, n, K, L, lambda, tau. "reference code" is the authors'
TensorFlow code (Qiaoyut/SINE).

Each field's description is its end-of-line comment or, for a field without one, the comment
lines directly above it: `python -m sine_jax.main --config=FILE --mode=config` prints every
field of a config with its value and that description (tests/config_docs_test.py checks that
every field has one).
"""

from ml_collections import config_dict


def get_config() -> config_dict.ConfigDict:
    config = config_dict.ConfigDict()

    config.data = data = config_dict.ConfigDict()
    data.format = "synthetic"  # synthetic movielens interactions sequences amazon taobao csv
    data.path = ""  # the interactions file (ratings.dat, u.data, UserBehavior.csv, .parquet, ...)
    data.on_bad_row = "error"  # error: stop at the first bad row (path:line: reason); skip: count and drop
    data.min_user_interactions = 3  # users with fewer are dropped (always >= 3, held-out >= 2)
    data.min_item_interactions = 1  # items with fewer are dropped (before the user filter)
    data.kcore_iterative = False  # repeat the item and user filters until stable; False: one pass
    data.split = "leave_one_out"  # leave_one_out (paper) | held_out_users (ComiRec: users 8:1:1)
    data.split_seed = 0  # held_out_users: seed of the user shuffle
    data.user_column = "user_id"  # csv format: the user id column (CSV header or Parquet name)
    data.item_column = "item_id"  # csv format: the item id column
    data.time_column = "timestamp"  # csv format: integer (Parquet: or date) time; "" = file order
    data.category_column = ""  # csv format: item category column (NMI, SINE-cate); "" = none
    data.csv_separator = ","  # csv format: field separator of a CSV file (not Parquet)
    data.cache_dir = ""  # preprocessed CSR arrays, shareable by sweep jobs; "" = WORKDIR/cache
    data.synthetic = config_dict.ConfigDict()
    data.synthetic.num_users = 2000  # planted multi-interest data: users
    data.synthetic.num_items = 1000  # items (raw ids 1..M)
    data.synthetic.num_categories = 20  # planted categories
    data.synthetic.seed = 0  # generator seed

    config.model = model = config_dict.ConfigDict()
    # sine | sine_cate (item categories as the prototype pool) | sine_label (MIND's label-aware
    # attention instead of eqs 6-8; K x N retrieval) | the baselines gru4rec caser sasrec mind
    # mcprn comirec_sa | pop (training counts; nothing trained). See sine_jax/models/.
    model.name = "sine"
    model.embed_dim = 128  # D
    model.num_interests = 4  # K, interests activated per user
    model.num_prototypes = 50  # L, concept prototypes in the pool ("topic_num" in the reference code)
    model.max_seq_len = 20  # n, history length (most recent n items)
    model.temperature = 0.1  # tau of eq 7
    # Dropout rate at training, every model (where: see each model's docstring); None = the
    # model's own paper's value (SASRec 0.2, Caser 0.5, GRU4Rec 0.3, others 0), for SINE its
    # preset's (default 0.2, paper and official 0).
    model.dropout = config_dict.placeholder(float)
    # default (the paper's equations + what passed the decision rule on validation HR@10:
    # eq 3's cosine assignment, the cosine logit scale, 2 encoder blocks, dropout 0.2) | paper
    # (the equations as printed) | official (the reference code): sets every switch left at None.
    model.preset = "default"
    # Ambiguity switches (sine_jax/models/sine.py, SineOptions); None takes the preset's value.
    model.attention_hidden = config_dict.placeholder(int)  # hidden width of eqs 1 and 4 (0 = D; official 512)
    model.assignment = config_dict.placeholder(str)  # eq 3: layernorm (paper) | cosine (cos/0.07)
    model.interest_attention = config_dict.placeholder(str)  # eq 4: per_interest | shared_gated
    model.interest_layernorm = config_dict.placeholder(bool)  # eq 5: LN3 on phi_k (official: no)
    model.aggregation_attention = config_dict.placeholder(str)  # eq 6: shared_w3 | own | own_plus_items
    model.aggregation = config_dict.placeholder(str)  # eqs 7-8: temperature | dense_concat
    model.positional_in_concept_attention = config_dict.placeholder(bool)  # eq 1 input + pos-emb
    # Beyond the paper: the history's X_t from an input table of its own (separate) or from the
    # scored item table (shared: paper and reference code). See docs/results-4epochs.md.
    model.input_table = config_dict.placeholder(str)
    # Eqs 3 and 7: printed (the product of two LayerNorm'd vectors as printed, about D x their
    # cosine, which makes both softmaxes one-hot) | cosine (divided by D).
    model.logit_scale = config_dict.placeholder(str)
    # Beyond the paper: eq 8's user vector through a learned D x D map (from the identity).
    model.output_projection = config_dict.placeholder(bool)
    # Beyond the paper: causal self-attention blocks (SASRec's) over the history before eq 1.
    model.encoder_blocks = config_dict.placeholder(int)
    # Baselines' own fields: model.NAME.* is read by the model called NAME only (each also
    # reads embed_dim, max_seq_len and num_interests).
    model.sasrec = config_dict.ConfigDict()
    model.sasrec.num_blocks = 2  # self-attention blocks (SASRec paper: 2)
    model.sasrec.num_heads = 1  # attention heads (SASRec paper: 1)
    model.caser = config_dict.ConfigDict()
    model.caser.num_horizontal = 16  # horizontal filters per height 1..n (Caser paper: 16)
    model.caser.num_vertical = 4  # vertical filters (Caser paper: 4)
    model.caser.markov_order = 5  # L: Caser sees the most recent L <= n items (Caser paper: 5)
    model.mind = config_dict.ConfigDict()
    model.mind.routing_iterations = 3  # behaviour-to-interest routing iterations (MIND: 3)
    # p of MIND's label-aware attention softmax_k(pow(q_k . e, p)) at training: None = p -> inf,
    # the interest nearest the target (the MIND paper's best setting); 0 = the mean; or >= 1.
    model.mind.label_power = config_dict.placeholder(float)
    # K'_u = max(1, min(K, floor(log2 |history|))) active interests (MIND paper); False: K.
    model.mind.dynamic_interests = True
    model.mcprn = config_dict.ConfigDict()
    model.mcprn.temperature = 0.1  # tau of the purpose-routing softmax
    model.comirec_sa = config_dict.ConfigDict()
    model.comirec_sa.attention_hidden = 0  # hidden width of the self-attention; 0 = 4 D (ComiRec code)

    config.loss = loss = config_dict.ConfigDict()
    loss.name = "sampled_softmax"  # sampled_softmax (eq 9 with sampling) | full_softmax
    loss.negatives_per_example = 5  # S = this x batch size shared negatives (5 MovieLens, 10 others)
    loss.logq_correction = True  # subtract log(S q(i)) from every logit
    loss.remove_accidental_hits = True  # mask sampled ids equal to the example's target
    loss.cov_weight = config_dict.placeholder(float)  # lambda of eq 11; None: 0.5 (paper), 0 (official)

    config.train = train = config_dict.ConfigDict()
    train.batch_size = 128  # global batch size (divisible by the mesh's data axis)
    # Passes over all training examples: a cap; early stopping (train.patience) ends the run.
    train.num_epochs = 100
    train.seed = 0  # model init, negatives and data order
    train.learning_rate = 1e-3  # Adam
    train.weight_decay = 0.0  # AdamW's decoupled weight decay, every parameter; 0 = plain Adam
    train.warmup_steps = 0  # linear warm-up from 0 to the learning rate
    train.lr_decay = "constant"  # constant | cosine (to 0 at the last step)
    train.grad_clip_norm = 0.0  # global-norm gradient clipping; 0 = off
    train.on_nonfinite = "stop"  # NaN/Inf loss or gradient: stop (keep the last good checkpoint) | skip the batch
    train.patience = 5  # evaluations without improvement before early stopping; 0 = never stop
    train.log_every_steps = 100  # progress line and TensorBoard scalars
    # Row-sparse ("lazy") Adam for the item table: only the rows a batch touches (history,
    # targets, negatives) and their moments are updated, so a step costs the same for 40k or
    # 4M items. None = on when a step touches at most 1/8 of the table (Taobao, not ML-1M).
    train.sparse_item_updates = config_dict.placeholder(bool)
    train.compute_dtype = "float32"  # float32 | bfloat16 (bf16 compute, f32 master weights)

    config.eval = eval_ = config_dict.ConfigDict()
    eval_.every_steps = 0  # periodic validation every this many steps; 0 = once per epoch
    eval_.metric = "HR@10"  # validation metric for early stopping and the best checkpoint
    eval_.mask_history = True  # exclude the user's history items from the ranking (the paper)
    eval_.ks = (10, 50, 100)  # cut-offs N of HR@N and NDCG@N
    eval_.batch_size = 256  # users scored at once
    eval_.item_chunk_size = 65536  # items scored at once (no [users x items] matrix)

    config.checkpoint = ckpt = config_dict.ConfigDict()
    ckpt.every_steps = 5000  # periodic checkpoints (every validation also checkpoints)
    ckpt.keep = 2  # most recent checkpoints kept; the best one is always kept too

    config.serving = serving = config_dict.ConfigDict()
    serving.index = "flat"  # --mode=export's faiss index: flat (exact inner product) | hnsw | ivf
    serving.hnsw_neighbors = 32  # HNSW graph degree (faiss M)
    serving.hnsw_ef_construction = 200  # HNSW candidate list while building
    serving.hnsw_ef_search = 128  # HNSW candidate list while searching (at least top_n + history)
    serving.ivf_lists = 0  # IVF cells; 0 = min(4 sqrt(M), M / 39)
    serving.ivf_probe = 16  # IVF cells visited per query
    serving.recall_users = 1000  # validation users for an approximate index's recall@100 (0 = skip)

    config.mesh = mesh = config_dict.ConfigDict()
    mesh.data = -1  # devices on the 'data' axis (batches split over it); -1 = all left
    mesh.model = 1  # devices on the 'model' axis (the item table's rows split over it)
    mesh.shard_prototypes = False  # also split the prototype pool's rows over 'model'
    mesh.distributed = False  # multi-host: jax.distributed.initialize() from the environment
    return config
